"""Configuration: INI + environment, every error reported at once, etc/siprecd.conf in sync."""

from __future__ import annotations

import os
import re
import socket

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import SCHEMA, ConfigError, example, load_config
from siprecd.preflight import preflight
from siprecd.tap import Options

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LoadConfigTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_embedded_defaults(self) -> None:
        config = load_config(None, {})
        self.assertEqual(config.sip.udp_port, 5060)
        self.assertEqual(config.sip.tls_port, 0)
        self.assertEqual(config.web.bind_address, "127.0.0.1")
        self.assertEqual(config.web.port, 8080)
        self.assertEqual((config.media.port_min, config.media.port_max), (20000, 30000))
        self.assertEqual(config.recording.directory, "/var/lib/siprecd/recordings")
        self.assertEqual(config.siprec.codec_preference, ("PCMU", "PCMA", "G722", "opus"))
        self.assertIs(config.siprec.accept_plain_calls, False)
        self.assertEqual(config.source, "embedded defaults")

    def test_file_then_environment(self) -> None:
        path = self.write("[sip]\nudp_port = 5070\ntcp_port = 5071\n[media]\nport_min = 40000\nport_max = 40999\n")
        config = load_config(path, {"SIPRECD_SIP_UDP_PORT": "5080", "OTHER": "x"})
        self.assertEqual(config.sip.udp_port, 5080)  # the environment wins over the file
        self.assertEqual(config.sip.tcp_port, 5071)
        self.assertEqual(config.media.port_min, 40000)

    def test_every_error_at_once(self) -> None:
        path = self.write(
            "[sip]\nudp_port = seven\nbogus = 1\n[nonsense]\nx = 1\n[media]\nport_min = 20001\n"
        )
        with self.assertRaises(ConfigError) as raised:
            load_config(path, {"SIPRECD_WEB_PORT": "99999", "SIPRECD_SIP_NOPE": "1", "SIPRECD_FOO_BAR": "1"})
        errors = raised.exception.errors
        self.assertIn(f"{path}: unknown section [nonsense]", errors)
        self.assertIn(f"{path}: unknown key 'bogus' in [sip]", errors)
        self.assertIn(f"{path} [sip] udp_port: [sip] udp_port = 'seven': 'seven' is not a whole number", errors)
        self.assertIn("environment SIPRECD_WEB_PORT: [web] port = '99999': 99999 is outside 0..65535", errors)
        self.assertIn("environment SIPRECD_SIP_NOPE: unknown key 'nope' in [sip]", errors)
        self.assertIn("environment SIPRECD_FOO_BAR: no section of that name", errors)
        self.assertEqual(len(errors), 6)

    def test_cross_checks(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            load_config(None, {"SIPRECD_SIP_TLS_PORT": "5061", "SIPRECD_MEDIA_PORT_MIN": "20001"})
        self.assertEqual(
            raised.exception.errors,
            [
                "[sip] tls_port is set: tls_certificate and tls_private_key are required",
                "[media] port_min = 20001: must be even (RTP ports are even)",
            ],
        )

    def test_booleans_and_lists(self) -> None:
        config = load_config(
            None,
            {"SIPRECD_SIPREC_ACCEPT_PLAIN_CALLS": "yes", "SIPRECD_SIPREC_CODEC_PREFERENCE": "PCMA, PCMU"},
        )
        self.assertIs(config.siprec.accept_plain_calls, True)
        self.assertEqual(config.siprec.codec_preference, ("PCMA", "PCMU"))
        with self.assertRaises(ConfigError) as raised:
            load_config(None, {"SIPRECD_RECORDING_OPUS_PASSTHROUGH": "maybe"})
        self.assertIn("'maybe' is not a boolean", raised.exception.errors[0])

    def test_unreadable_file(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            load_config("/nonexistent/siprecd.conf", {})
        self.assertEqual(raised.exception.errors, ["/nonexistent/siprecd.conf: cannot read: No such file or directory"])

    def test_shipped_config_documents_every_key_with_its_default(self) -> None:
        with open(os.path.join(REPOSITORY, "etc", "siprecd.conf")) as handle:
            text = handle.read()
        documented: dict[str, dict[str, str]] = {}
        section = ""
        for line in text.splitlines():
            header = re.match(r"^\[(\w+)\]$", line)
            if header:
                section = header.group(1)
                documented[section] = {}
                continue
            key = re.match(r"^#? ?(\w+) = ?(.*)$", line)
            if key and section:
                documented[section][key.group(1)] = key.group(2)
        expected = {s: {k.name: k.default for k in keys} for s, keys in SCHEMA.items()}
        self.assertEqual(documented, expected)
        # Word for word what `python -m siprecd.config` generates from the schema.
        self.assertEqual(text, example())
        # And the shipped file itself loads.
        load_config(os.path.join(REPOSITORY, "etc", "siprecd.conf"), {})


class PreflightTests(SynchronousTestCase):
    def test_port_in_use_and_bad_tls_files_reported_together(self) -> None:
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", 0))
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        directory = self.mktemp()
        config = load_config(
            None,
            {
                "SIPRECD_SIP_BIND_ADDRESS": "127.0.0.1",
                "SIPRECD_SIP_UDP_PORT": str(port),
                "SIPRECD_SIP_TCP_PORT": "0",
                "SIPRECD_SIP_TLS_PORT": "0",
                "SIPRECD_WEB_PORT": "0",
                "SIPRECD_RECORDING_DIRECTORY": directory,
            },
        )
        self.assertEqual(
            preflight(config), [f"[sip] udp_port = {port} on 127.0.0.1: cannot bind: Address already in use"]
        )
        self.assertTrue(os.path.isdir(directory))

    def test_unreadable_tls_files(self) -> None:
        config = load_config(
            None,
            {
                "SIPRECD_SIP_BIND_ADDRESS": "127.0.0.1",
                "SIPRECD_SIP_UDP_PORT": "0",
                "SIPRECD_SIP_TCP_PORT": "0",
                "SIPRECD_SIP_TLS_PORT": "1",
                "SIPRECD_SIP_TLS_CERTIFICATE": "/nonexistent/cert.pem",
                "SIPRECD_SIP_TLS_PRIVATE_KEY": "/nonexistent/key.pem",
                "SIPRECD_WEB_PORT": "0",
                "SIPRECD_RECORDING_DIRECTORY": self.mktemp(),
            },
        )
        problems = preflight(config)
        self.assertIn(
            "[sip] tls_certificate /nonexistent/cert.pem: cannot read: No such file or directory", problems
        )

    def test_options_turn_errors_into_usage_errors(self) -> None:
        options = Options()
        self.patch(os, "environ", {"SIPRECD_SIP_UDP_PORT": "x", "SIPRECD_WEB_PORT": "-1"})
        with self.assertRaises(usage.UsageError) as raised:
            options.parseOptions([])
        message = str(raised.exception)
        self.assertIn("[sip] udp_port = 'x'", message)
        self.assertIn("[web] port = '-1'", message)


class EncryptionPreflightTests(SynchronousTestCase):
    def config(self, keys: str) -> object:
        return load_config(
            None,
            {
                "SIPRECD_SIP_BIND_ADDRESS": "127.0.0.1",
                "SIPRECD_SIP_UDP_PORT": "0",
                "SIPRECD_SIP_TCP_PORT": "0",
                "SIPRECD_WEB_PORT": "0",
                "SIPRECD_RECORDING_DIRECTORY": os.path.abspath(self.mktemp()),
                "SIPRECD_ENCRYPTION_ENABLED": "true",
                "SIPRECD_ENCRYPTION_KEY_DIRECTORY": keys,
            },
        )

    def test_key_directory_too_open_refuses_to_start(self) -> None:
        keys = os.path.abspath(self.mktemp())
        os.makedirs(keys)
        os.chmod(keys, 0o755)
        problems = preflight(self.config(keys))  # type: ignore[arg-type]
        self.assertEqual(len(problems), 1, problems)
        self.assertTrue(problems[0].startswith("[encryption] "), problems)
        self.assertIn(keys, problems[0])
        self.assertIn("755", problems[0])

    def test_new_key_directory_is_created_private(self) -> None:
        keys = os.path.abspath(self.mktemp())
        self.assertEqual(preflight(self.config(keys)), [])  # type: ignore[arg-type]
        self.assertEqual(os.stat(keys).st_mode & 0o777, 0o700)

    def test_passthrough_and_encryption_refused_together(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            load_config(None, {"SIPRECD_ENCRYPTION_ENABLED": "true", "SIPRECD_RECORDING_OPUS_PASSTHROUGH": "true"})
        self.assertIn("opus_passthrough cannot be combined", raised.exception.errors[0])


class WebExposureTests(SynchronousTestCase):
    def problems(self, **environment: str) -> list[str]:
        with socket.socket() as probe:
            probe.bind(("0.0.0.0", 0))
            web_port = probe.getsockname()[1]
        base = {
            "SIPRECD_SIP_BIND_ADDRESS": "127.0.0.1",
            "SIPRECD_SIP_UDP_PORT": "0",
            "SIPRECD_SIP_TCP_PORT": "0",
            "SIPRECD_WEB_PORT": str(web_port),
            "SIPRECD_RECORDING_DIRECTORY": os.path.abspath(self.mktemp()),
        }
        return preflight(load_config(None, {**base, **environment}))

    def test_public_bind_without_credentials_refused(self) -> None:
        (problem,) = self.problems(SIPRECD_WEB_BIND_ADDRESS="0.0.0.0")
        self.assertIn("not a loopback address", problem)

    def test_public_bind_with_credentials_allowed(self) -> None:
        self.assertEqual(self.problems(SIPRECD_WEB_BIND_ADDRESS="0.0.0.0", SIPRECD_WEB_API_TOKEN="x" * 24), [])

    def test_short_token_and_empty_password_refused(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            load_config(None, {"SIPRECD_WEB_API_TOKEN": "short", "SIPRECD_WEB_BASIC_USERS": "ops:"})
        self.assertEqual(len(raised.exception.errors), 2, raised.exception.errors)
