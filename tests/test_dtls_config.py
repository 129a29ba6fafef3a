"""[security] dtls_* keys: checked when the config loads and before the reactor starts."""

from __future__ import annotations

import os

from cryptography import x509
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import ConfigError, load_config
from siprecd.preflight import preflight
from siprecd.security.dtls_method import DTLSSRTP
from tests.certs import make_test_pki


class DTLSConfigTests(SynchronousTestCase):
    def load(self, **security: str):
        env = {
            "SIPRECD_SIP_UDP_PORT": "0",
            "SIPRECD_SIP_TCP_PORT": "0",
            "SIPRECD_WEB_PORT": "0",
            "SIPRECD_RECORDING_DIRECTORY": self.mktemp(),
        }
        env.update({f"SIPRECD_SECURITY_{key.upper()}": value for key, value in security.items()})
        return load_config(None, env)

    def test_defaults_generate_a_certificate(self) -> None:
        config = self.load()
        self.assertEqual((config.security.dtls_setup, config.security.dtls_handshake_timeout), ("active", 30.0))
        self.assertEqual(preflight(config), [])
        first = DTLSSRTP.from_config(config.security, Clock()).settings.context.fingerprint()
        second = DTLSSRTP.from_config(config.security, Clock()).settings.context.fingerprint()
        self.assertNotEqual(first, second)  # one per start-up

    def test_configured_certificate_is_used(self) -> None:
        pki = make_test_pki(self.mktemp())
        config = self.load(dtls_certificate=pki.server_cert, dtls_private_key=pki.server_key, dtls_setup="passive")
        self.assertEqual(preflight(config), [])
        method = DTLSSRTP.from_config(config.security, Clock())
        with open(pki.server_cert, "rb") as handle:
            expected = x509.load_pem_x509_certificate(handle.read())
        self.assertEqual(method.settings.context.certificate.certificate, expected)
        self.assertEqual(method.settings.preferred.value, "passive")

    def test_problems_are_reported_before_start(self) -> None:
        pki = make_test_pki(self.mktemp())
        missing = os.path.join(self.mktemp(), "none.pem")
        config = self.load(dtls_certificate=missing, dtls_private_key=pki.server_key)
        [problem] = preflight(config)
        self.assertIn(f"[security] dtls_certificate = {missing}: No such file", problem)
        config = self.load(dtls_certificate=pki.server_cert, dtls_private_key=pki.client_key)
        [problem] = preflight(config)
        self.assertIn("private key does not match the certificate", problem)
        config = self.load(suites="AES_256_CM_HMAC_SHA1_80")
        [problem] = preflight(config)
        self.assertIn("key_exchange has dtls-srtp but suites allows none of its profiles", problem)
        self.assertEqual(preflight(self.load(suites="AES_256_CM_HMAC_SHA1_80", key_exchange="sdes")), [])

    def test_bad_values(self) -> None:
        for security, expected in (
            ({"dtls_certificate": "/x.pem"}, "set both, or neither"),
            ({"dtls_setup": "actpass"}, "dtls_setup"),
            ({"dtls_handshake_timeout": "0"}, "dtls_handshake_timeout"),
        ):
            with self.assertRaises(ConfigError) as raised:
                self.load(**security)
            self.assertIn(expected, str(raised.exception), security)
