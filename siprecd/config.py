"""Configuration: an INI file plus ``SIPRECD_<SECTION>_<KEY>`` environment overrides.

The result is a frozen, typed :class:`Config`.  Unknown sections and keys, and values that do
not parse or are out of range, are all collected and reported together in one
:class:`ConfigError` before the reactor starts.  ``etc/siprecd.conf`` documents every key; a test
checks that it and :data:`SCHEMA` agree.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from siprecd.config_values import (  # the schema below names them as before
    Parser,
    address as _address,
    algorithm as _algorithm,
    boolean as _bool,
    choice as _choice,
    codec_names as _codecs,
    duration as _duration,
    float_range as _float,
    int_range as _int,
    known_names as _known_names,
    name_list as _names,
    optional_address as _optional_address,
    optional_int_range as _optional_int,
    optional_path as _optional_path,
    path as _path,
    string as _string,
)

ENV_PREFIX = "SIPRECD_"
# Environment variables with the prefix that are not config keys (secrets never go in files).
NON_KEY_ENVIRONMENT = frozenset({"SIPRECD_ENCRYPTION_PASSPHRASE"})


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class Key:
    name: str
    parse: Parser
    default: str
    doc: str


# The Python AES-256-CM path costs more per packet than libsrtp's suites: those come first.
DEFAULT_SUITES = ("AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80",
                  "AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_32")
_suites = _known_names(DEFAULT_SUITES, "suites")


PORT = _int(0, 65535)

SCHEMA: dict[str, list[Key]] = {
    "sip": [
        Key("bind_address", _address, "0.0.0.0", "Address the SIP transports listen on."),
        Key("udp_port", PORT, "5060", "SIP over UDP port; 0 disables UDP."),
        Key("tcp_port", PORT, "5060", "SIP over TCP port; 0 disables TCP."),
        Key("tls_port", PORT, "0", "SIP over TLS port; 0 disables TLS (needs certificate and key)."),
        Key("tls_certificate", _optional_path, "", "PEM certificate (chain) for TLS."),
        Key("tls_private_key", _optional_path, "", "PEM private key for TLS."),
        Key(
            "tls_ca_certificates",
            _optional_path,
            "",
            "PEM CA bundle; when set, TLS clients must present a certificate it verifies.",
        ),
        Key(
            "advertised_address",
            _optional_address,
            "",
            "Address put in Contact/Via; empty: the bind address, or the Request-URI host "
            "when bound to a wildcard.",
        ),
        Key("t1", _float(0.05, 10), "0.5", "RFC 3261 T1 (round-trip estimate), seconds."),
        Key("t2", _float(0.5, 60), "4.0", "RFC 3261 T2 (maximum retransmit interval), seconds."),
        Key("t4", _float(0.5, 60), "5.0", "RFC 3261 T4 (maximum network lifetime), seconds."),
        Key("max_message_size", _int(1024, 1048576), "65535", "Largest SIP message accepted, bytes."),
        Key("max_headers", _int(16, 1024), "128", "Most header lines in one message."),
        Key("max_connections", _int(1, 100000), "1024", "Most open TCP+TLS connections per transport."),
        Key(
            "rate_limit",
            _float(0, 100000),
            "200",
            "New out-of-dialog requests per second per source address; 0 disables. Excess: 503.",
        ),
        Key("rate_burst", _float(1, 1000000), "400", "Token bucket size of the rate limit."),
        Key("user_agent", _string, "siprecd", "Server and User-Agent header value."),
    ],
    "media": [
        Key("bind_address", _address, "0.0.0.0", "Address RTP/RTCP sockets are bound to."),
        Key(
            "advertised_address",
            _optional_address,
            "",
            "Address put in SDP c= lines; empty: the bind address, or the SIP local address "
            "when bound to a wildcard.",
        ),
        Key("port_min", _int(1024, 65534), "20000", "Lowest RTP port (even); RTCP is RTP+1."),
        Key("port_max", _int(1025, 65535), "30000", "Highest RTCP port."),
        Key(
            "latch",
            _choice("first", "sdp"),
            "first",
            "Symmetric RTP: 'first' latches each stream to the first address that sends to it; "
            "'sdp' also requires that address to be the SDP's c= address.",
        ),
        Key(
            "receive_buffer",
            _int(0, 64 * 1024 * 1024),
            "262144",
            "SO_RCVBUF of each RTP/RTCP socket, bytes (0: the system default).",
        ),
        Key(
            "reorder_window",
            _int(0, 1000),
            "8",
            "Packets held after a gap waiting for a late packet before it is given up as lost.",
        ),
        Key(
            "max_reorder_delay",
            _float(0, 10),
            "0.2",
            "Seconds a held packet waits for a missing one before that one counts as lost.",
        ),
        Key("rtcp_interval", _float(1, 60), "5.0", "Seconds between RTCP receiver reports."),
        Key(
            "packet_batch",
            _int(1, 16),
            "8",
            "Packets a G.711 stream queues (after SRTP and the replay check) before its recording "
            "takes them in one step: less CPU per packet, the same files and counters; files lag by "
            "at most that many packets between flushes (1: every packet on its own, the old path).",
        ),
    ],
    "recording": [
        Key("directory", _path, "/var/lib/siprecd/recordings", "Where recording sessions are written."),
        Key(
            "mix",
            _choice("stereo", "mono", "none"),
            "stereo",
            "Besides one file per stream: 'stereo' writes a two-party call as one stereo WAV "
            "(a participant per channel), 'mono' a mixed-down WAV, 'none' nothing more.",
        ),
        Key(
            "opus_passthrough",
            _bool,
            "false",
            "Store Opus streams as Ogg Opus (RFC 7845) without re-encoding instead of WAV.",
        ),
        Key(
            "chunk_size",
            _int(1024, 4 * 1024 * 1024),
            "8192",
            "Bytes buffered per file between writes (resident memory per call grows with it: "
            "8192 keeps a call near 64 KiB, see bench/README.md).",
        ),
        Key(
            "flush_interval",
            _float(0.1, 60),
            "1.0",
            "Seconds between flushes of every open file (what a crash can lose at most).",
        ),
        Key(
            "min_free_space",
            _int(0, 2**62),
            "268435456",
            "Bytes that must stay free on the recording file system: below it new calls get 503 "
            "and /ready fails.",
        ),
    ],
    "service": [
        Key(
            "drain_timeout",
            _float(0, 86400),
            "60",
            "On stop: seconds active calls may go on (new INVITEs get 503) before they get a BYE.",
        ),
        Key(
            "workers",
            _int(1, 64),
            "1",
            "Processes that record calls: 1 is one process doing everything. N >= 2: a parent "
            "owns the SIP sockets and hands each call (by Call-ID) to one of N worker processes, "
            "each with its share of the [media] port range and its own state, all writing to the "
            "same [recording] directory ([siprec] max_sessions applies to each); a worker that dies is "
            "restarted and resumes its calls. "
            "Use one per core (see README 'Worker processes').",
        ),
        Key(
            "heap_trim_interval",
            _float(0, 3600),
            "10",
            "Seconds between two glibc malloc_trim calls that give the C heap's free pages back "
            "(call set-ups leave holes: 8-12 KiB per call, bench/README.md); a few ms each at "
            "thousands of calls. 0: never.",
        ),
    ],
    "siprec": [
        Key(
            "accept_plain_calls",
            _bool,
            "false",
            "Record INVITEs without SIPREC markers (each m-line a stream, no metadata); "
            "otherwise they get 488.",
        ),
        Key("max_sessions", _int(1, 1000000), "1000", "Most concurrent recording sessions; then 503."),
        Key(
            "codec_preference",
            _codecs,
            "PCMU PCMA G722 opus",
            "Codecs chosen from an offer, most preferred first.",
        ),
        Key("max_metadata_size", _int(1024, 16777216), "1048576", "Largest metadata document parsed, bytes."),
        Key("retry_after", _int(1, 3600), "10", "Retry-After seconds on 503 for overload."),
    ],
    "security": [
        Key("srtp", _choice("off", "optional", "required"), "optional",
            "Secured media: 'off' refuses RTP/SAVP m-lines (a=crypto on RTP/AVP is ignored), 'optional' "
            "records SRTP and plain RTP, 'required' refuses plain RTP m-lines (488 if none is left)."),
        Key("suites", _suites, " ".join(DEFAULT_SUITES),
            "SRTP suites accepted, most preferred first (the SRS's order decides, not the offer's)."),
        Key("key_exchange", _known_names(("sdes", "dtls-srtp"), "key_exchange"), "sdes dtls-srtp",
            "Key exchange methods accepted, most preferred first: sdes (RFC 4568), dtls-srtp (RFC 5763)."),
        Key("allow_unencrypted", _bool, "false",
            "Accept SDES UNENCRYPTED_SRTP/SRTCP (authenticated only); UNAUTHENTICATED_SRTP: never."),
        Key("rekey_grace", _float(0, 60), "5",
            "Seconds the previous key still unprotects packets in flight after a re-offer changes it."),
        Key("dtls_certificate", _optional_path, "",
            "PEM certificate for DTLS-SRTP; empty: a self-signed ECDSA P-256 one is made at start-up."),
        Key("dtls_private_key", _optional_path, "",
            "PEM private key of dtls_certificate (both set, or both empty)."),
        Key("dtls_setup", _choice("active", "passive"), "active",
            "DTLS role answered to a=setup:actpass offers (active: the SRS opens the handshake)."),
        Key("dtls_handshake_timeout", _float(1, 300), "30",
            "Seconds a DTLS-SRTP handshake may take before it is reported as failed."),
    ],
    "encryption": [
        Key(
            "enabled",
            _bool,
            "false",
            "Encrypt recordings at rest (streaming AEAD, see docs/encryption-format.md).",
        ),
        Key("algorithm", _algorithm, "AES-256-GCM", "Data cipher of new files: AES-256-GCM or ChaCha20-Poly1305."),
        Key(
            "encrypt_metadata",
            _bool,
            "false",
            "Also encrypt metadata XML and the personal fields of session.json "
            "(session-private.json.enc); session.json keeps ids, times, state, file names, stats.",
        ),
        Key("key_store", _choice("file", "memory"), "file", "Where key-encryption keys live ('memory': lost at exit)."),
        Key("key_directory", _path, "/var/lib/siprecd/keys", "Directory of the file key store (mode 0700)."),
        Key(
            "rotation_interval",
            _duration,
            "24h",
            "How often a new key-encryption key is made (e.g. 24h, 30m, 3600); 0 disables rotation.",
        ),
        Key("kdf", _choice("scrypt", "pbkdf2"), "scrypt", "How SIPRECD_ENCRYPTION_PASSPHRASE becomes a wrapping key."),
        Key(
            "kdf_cost",
            _optional_int(1, 10_000_000),
            "",
            "scrypt: log2 of N; pbkdf2: iterations; empty: 15 for scrypt, 600000 for pbkdf2.",
        ),
    ],
    "web": [
        Key("bind_address", _address, "127.0.0.1", "Address of the HTTP server (health, metrics, API)."),
        Key("port", PORT, "8080", "HTTP port; 0 disables the web server."),
        Key("api_token", _string, "", "Bearer token for the API and dashboard (empty: none)."),
        Key(
            "basic_users",
            _string,
            "",
            "HTTP basic credentials for the API and dashboard: 'user:password' pairs separated by "
            "spaces (empty: none).",
        ),
        Key("protect_health", _bool, "false", "Require the credentials for /health and /ready too."),
        Key("protect_metrics", _bool, "false", "Require the credentials for /metrics too."),
    ],
    "state": [
        Key(
            "backend",
            _choice("local", "redis"),
            "local",
            "Where live session state is kept so calls survive a restart: 'local' (SQLite in WAL "
            "mode on this node's disk, no server) or 'redis' (shared by a cluster; the local "
            "store is still written first, so nothing is lost while Redis is down).",
        ),
        Key(
            "path",
            _optional_path,
            "",
            "SQLite file of the local store; empty: .state/state.sqlite under [recording] directory.",
        ),
        Key("redis_url", _string, "redis://127.0.0.1:6379/0", "Redis server of the 'redis' backend."),
        Key("connect_timeout", _float(0.1, 60), "2.0", "Seconds to wait for a Redis connection."),
        Key("command_timeout", _float(0.1, 60), "2.0", "Seconds a Redis command may take before the store counts as degraded."),
        Key("node_id", _string, "", "This node's name in a cluster (session ownership); empty: the host name."),
        Key(
            "lease",
            _float(1, 3600),
            "10",
            "Seconds a node's ownership of its sessions lasts in Redis without a heartbeat "
            "(renewed every third of it); after that another node may take them over.",
        ),
        Key(
            "on_stop",
            _choice("hang_up", "keep"),
            "hang_up",
            "What a clean stop does with the calls still in progress after [service] "
            "drain_timeout: 'hang_up' (BYE, files final) or 'keep' (no BYE: files and state are "
            "left for the next start to resume, as after a crash; for restarts and upgrades).",
        ),
        Key(
            "orphan_timeout",
            _float(0, 604800),
            "3600",
            "Seconds of neither media (RTP/RTCP) nor SIP after which a session is ended with a BYE "
            "(its SRC has gone away); 0 disables.",
        ),
    ],
}


@dataclass(frozen=True)
class SipConfig:
    bind_address: str
    udp_port: int
    tcp_port: int
    tls_port: int
    tls_certificate: str | None
    tls_private_key: str | None
    tls_ca_certificates: str | None
    advertised_address: str | None
    t1: float
    t2: float
    t4: float
    max_message_size: int
    max_headers: int
    max_connections: int
    rate_limit: float
    rate_burst: float
    user_agent: str


@dataclass(frozen=True)
class MediaConfig:
    bind_address: str
    advertised_address: str | None
    port_min: int
    port_max: int
    latch: str
    receive_buffer: int
    reorder_window: int
    max_reorder_delay: float
    rtcp_interval: float
    packet_batch: int


@dataclass(frozen=True)
class RecordingConfig:
    directory: str
    mix: str
    opus_passthrough: bool
    chunk_size: int
    flush_interval: float
    min_free_space: int


@dataclass(frozen=True)
class ServiceConfig:
    drain_timeout: float
    workers: int = 1
    heap_trim_interval: float = 10.0


@dataclass(frozen=True)
class SiprecConfig:
    accept_plain_calls: bool
    max_sessions: int
    codec_preference: tuple[str, ...]
    max_metadata_size: int
    retry_after: int


@dataclass(frozen=True)
class SecurityConfig:
    srtp: str
    suites: tuple[str, ...]
    key_exchange: tuple[str, ...]
    allow_unencrypted: bool
    rekey_grace: float
    # Defaults only for code that builds a SecurityConfig by hand (tests): files always set all.
    dtls_certificate: str | None = None
    dtls_private_key: str | None = None
    dtls_setup: str = "active"
    dtls_handshake_timeout: float = 30.0


@dataclass(frozen=True)
class EncryptionConfig:
    enabled: bool
    algorithm: str
    encrypt_metadata: bool
    key_store: str
    key_directory: str
    rotation_interval: float
    kdf: str
    kdf_cost: int | None


@dataclass(frozen=True)
class WebConfig:
    bind_address: str
    port: int
    api_token: str
    basic_users: str
    protect_health: bool
    protect_metrics: bool

    @property
    def users(self) -> dict[str, str]:
        return dict(pair.split(":", 1) for pair in self.basic_users.split())


@dataclass(frozen=True)
class StateConfig:
    backend: str
    path: str | None
    redis_url: str
    connect_timeout: float
    command_timeout: float
    node_id: str
    lease: float
    on_stop: str
    orphan_timeout: float


SECTIONS: dict[str, type] = {
    "sip": SipConfig,
    "media": MediaConfig,
    "recording": RecordingConfig,
    "service": ServiceConfig,
    "siprec": SiprecConfig,
    "security": SecurityConfig,
    "encryption": EncryptionConfig,
    "web": WebConfig,
    "state": StateConfig,
}


@dataclass(frozen=True)
class Config:
    sip: SipConfig
    media: MediaConfig
    recording: RecordingConfig
    service: ServiceConfig
    siprec: SiprecConfig
    security: SecurityConfig
    encryption: EncryptionConfig
    web: WebConfig
    state: StateConfig
    source: str = field(default="embedded defaults")
    # Set by the supervisor for one of [service] workers processes, never from the file: that
    # worker's index (its port slice, state file, active index, node id suffix).
    worker_index: int | None = None


def load_config(path: str | None, environ: Mapping[str, str]) -> Config:
    """Read ``path`` (None: embedded defaults only), apply the environment, validate it all."""
    errors: list[str] = []
    raw: dict[str, dict[str, tuple[str, str]]] = {
        section: {key.name: (key.default, "default") for key in keys}
        for section, keys in SCHEMA.items()
    }
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as error:
            raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
        except configparser.Error as error:
            raise ConfigError([f"{path}: {error}".replace("\n", " ")]) from None
        for section in parser.sections():
            if section not in SCHEMA:
                errors.append(f"{path}: unknown section [{section}]")
                continue
            for name, value in parser.items(section):
                if name not in raw[section]:
                    errors.append(f"{path}: unknown key {name!r} in [{section}]")
                else:
                    raw[section][name] = (value, f"{path} [{section}] {name}")
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in NON_KEY_ENVIRONMENT:
            continue
        rest = variable[len(ENV_PREFIX):].lower()
        section = next((s for s in SCHEMA if rest.startswith(s + "_")), None)
        if section is None:
            errors.append(f"environment {variable}: no section of that name")
            continue
        name = rest[len(section) + 1:]
        if name not in raw[section]:
            errors.append(f"environment {variable}: unknown key {name!r} in [{section}]")
            continue
        raw[section][name] = (value, f"environment {variable}")
    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key in keys:
            text, origin = raw[section][key.name]
            try:
                values[section][key.name] = key.parse(text)
            except ValueError as error:
                errors.append(f"{origin}: [{section}] {key.name} = {text!r}: {error}")
    if not errors:
        errors.extend(_cross_checks(values))
    if errors:
        raise ConfigError(errors)
    sections = {name: SECTIONS[name](**values[name]) for name in SCHEMA}
    return Config(**sections, source=path or "embedded defaults")


def _cross_checks(values: dict[str, dict[str, Any]]) -> list[str]:
    errors = []
    sip, media = values["sip"], values["media"]
    if sip["tls_port"] and not (sip["tls_certificate"] and sip["tls_private_key"]):
        errors.append("[sip] tls_port is set: tls_certificate and tls_private_key are required")
    security = values["security"]
    if bool(security["dtls_certificate"]) != bool(security["dtls_private_key"]):
        errors.append("[security] dtls_certificate and dtls_private_key: set both, or neither (generated)")
    if sip["tls_ca_certificates"] and not sip["tls_port"]:
        errors.append("[sip] tls_ca_certificates is set but tls_port is 0")
    if sip["t2"] < sip["t1"]:
        errors.append(f"[sip] t2 ({sip['t2']}) must not be below t1 ({sip['t1']})")
    encryption = values["encryption"]
    if encryption["enabled"] and values["recording"]["opus_passthrough"]:
        errors.append(
            "[recording] opus_passthrough cannot be combined with [encryption] enabled yet "
            "(the Ogg writer patches pages in place)"
        )
    if encryption["encrypt_metadata"] and not encryption["enabled"]:
        errors.append("[encryption] encrypt_metadata needs [encryption] enabled = true")
    if encryption["rotation_interval"] and encryption["rotation_interval"] < 60:
        errors.append(f"[encryption] rotation_interval = {encryption['rotation_interval']:g}s: at least 60s, or 0")
    bad_users = [
        pair for pair in values["web"]["basic_users"].split()
        if ":" not in pair or pair.startswith(":") or pair.endswith(":")
    ]
    if bad_users:
        errors.append(
            f"[web] basic_users: {len(bad_users)} entr(ies) are not 'user:password' with both parts set"
        )
    token = values["web"]["api_token"]
    if token and len(token) < 16:
        errors.append("[web] api_token: at least 16 characters (it is the only thing guarding the API)")
    redis_url = values["state"]["redis_url"]
    if values["state"]["backend"] == "redis" and not redis_url.startswith(("redis://", "unix://")):
        errors.append(f"[state] redis_url = {redis_url!r}: must start with redis:// or unix://")
    workers = values["service"]["workers"]
    pairs = (media["port_max"] - media["port_min"] + 1) // 2
    if workers > 1 and pairs < workers:
        errors.append(
            f"[service] workers = {workers}: the [media] port range has only {pairs} RTP/RTCP "
            "pair(s) to share between them"
        )
    if media["port_min"] % 2:
        errors.append(f"[media] port_min = {media['port_min']}: must be even (RTP ports are even)")
    if media["port_max"] < media["port_min"] + 1:
        errors.append(
            f"[media] port_max = {media['port_max']} leaves no RTP/RTCP pair above "
            f"port_min = {media['port_min']}"
        )
    return errors


EXAMPLE_HEADER = """\
# siprecd configuration (INI).
#
# Every key is listed below with its default; a commented key keeps the default.
# Any key can be overridden by an environment variable SIPRECD_<SECTION>_<KEY>,
# e.g. SIPRECD_SIP_UDP_PORT=5080 or SIPRECD_RECORDING_DIRECTORY=/srv/recordings.
# Unknown sections or keys and bad values stop the server before it starts, all
# reported at once.
"""


def example() -> str:
    """etc/siprecd.conf as it must read: every key, its doc and its default, from SCHEMA.

    ``python -m siprecd.config > etc/siprecd.conf`` regenerates it; a test keeps them equal.
    """
    import textwrap

    out = [EXAMPLE_HEADER]
    for section, keys in SCHEMA.items():
        out.append(f"[{section}]")
        for key in keys:
            out.extend(f"# {line}" for line in textwrap.wrap(key.doc, 94))
            out.append(f"# {key.name} = {key.default}".rstrip())
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(example(), end="")
