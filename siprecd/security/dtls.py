"""A DTLS-SRTP endpoint (RFC 5763/5764) on pyOpenSSL, driven through memory BIOs.

The endpoint owns no socket: datagrams from the peer go in through :meth:`datagram_received`,
datagrams for the peer come out through the ``send`` callable, so the stream's RTP socket can
carry DTLS, SRTP and STUN side by side (RFC 7983).  Handshake retransmission is scheduled on
the injected clock from ``DTLSv1_get_timeout``; a handshake that has not finished within
``handshake_timeout`` seconds (injected clock) fails and is reported.

Outcome callbacks, each called at most once: ``on_keys(SRTPKeys)`` after a handshake whose
peer certificate matched the SDP fingerprint, or ``on_failure(reason)``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from siprecd.security.certificate import (
    DTLSCertificate,
    Fingerprint,
    FingerprintMismatch,
    check_fingerprints,
)
from siprecd.security.suites import DTLS_PROFILES, SUITES

__all__ = [
    "DEFAULT_PROFILES",
    "DTLSContext",
    "DTLSEndpoint",
    "DTLSRole",
    "SRTPKeys",
    "pack_datagrams",
    "profile_lengths",
    "split_keying_material",
]

log = Logger()

# The order OpenSSL offers (client) or prefers (server).  _80 before _32: the shorter tag is
# only worth it on constrained links, which recording is not.
DEFAULT_PROFILES: tuple[str, ...] = (
    "SRTP_AES128_CM_SHA1_80",
    "SRTP_AEAD_AES_128_GCM",
    "SRTP_AEAD_AES_256_GCM",
    "SRTP_AES128_CM_SHA1_32",
)
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 §4.2

# Below the IPv6 minimum MTU less headers, so a flight never needs IP fragmentation.
DEFAULT_MTU = 1200
_RECORD_HEADER = 13  # DTLS record: type, version, epoch, sequence number, length
# Never spin when OpenSSL's own timer and the injected clock disagree by a hair.
_MIN_RETRANSMIT_DELAY = 0.01
_READ_SIZE = 65536
_DTLS1_2_VERSION = 0xFEFD


class DTLSRole(enum.Enum):
    """RFC 5763 §5: ``active`` opens the DTLS connection (client), ``passive`` accepts it."""

    ACTIVE = "active"
    PASSIVE = "passive"


@dataclass(frozen=True)
class SRTPKeys:
    """The SRTP profile and keys from one handshake, split for the local side.

    ``remote_*`` is the peer's write key: what the SRS decrypts the peer's SRTP/SRTCP with.
    ``local_*`` is the SRS's own write key (for the SRTCP receiver reports it sends).
    """

    profile: str
    remote_key: bytes = field(repr=False)
    remote_salt: bytes = field(repr=False)
    local_key: bytes = field(repr=False)
    local_salt: bytes = field(repr=False)


def profile_lengths(profile: str) -> tuple[int, int]:
    """RFC 5764 §4.2 / RFC 7714 §14.2: a profile's (master key, master salt) lengths."""
    suite = SUITES[DTLS_PROFILES[profile]]
    return suite.key_length, suite.salt_length


def split_keying_material(material: bytes, profile: str, role: DTLSRole) -> SRTPKeys:
    """RFC 5764 §4.2: client key | server key | client salt | server salt."""
    key_len, salt_len = profile_lengths(profile)
    if len(material) != 2 * (key_len + salt_len):
        raise ValueError(f"{profile} needs {2 * (key_len + salt_len)} bytes of keying material")
    client_key = material[:key_len]
    server_key = material[key_len : 2 * key_len]
    client_salt = material[2 * key_len : 2 * key_len + salt_len]
    server_salt = material[2 * key_len + salt_len :]
    if role is DTLSRole.ACTIVE:  # the SRS is the client: the peer writes with the server keys
        return SRTPKeys(profile, server_key, server_salt, client_key, client_salt)
    return SRTPKeys(profile, client_key, client_salt, server_key, server_salt)


def _verify_callback(connection: SSL.Connection, x509: object, errno: int, depth: int, ok: int) -> bool:
    # Chain errors (self-signed, unknown CA) are expected: RFC 5763 trusts the fingerprint, not
    # a CA.  Only the leaf matters, and it must match what the SDP announced.
    if depth != 0:
        return True
    endpoint = connection.get_app_data()
    if not isinstance(endpoint, DTLSEndpoint):
        return False
    try:
        check_fingerprints(x509.to_cryptography(), endpoint.remote_fingerprints)  # type: ignore[attr-defined]
    except FingerprintMismatch as exc:
        endpoint.mismatch = str(exc)
        return False
    return True


class DTLSContext:
    """One OpenSSL context for every DTLS-SRTP association of the process.

    Holds the SRS certificate and the SRTP profiles offered; a peer certificate is always
    requested (RFC 5763 §5: both sides present one) and checked by fingerprint.
    """

    def __init__(self, certificate: DTLSCertificate, profiles: Sequence[str] = DEFAULT_PROFILES) -> None:
        unknown = [p for p in profiles if p not in DTLS_PROFILES]
        if unknown or not profiles:
            raise ValueError(f"unknown or no DTLS-SRTP profiles: {', '.join(unknown) or '(none)'}")
        self.certificate = certificate
        self.profiles = tuple(profiles)
        context = SSL.Context(SSL.DTLS_METHOD)
        # DTLS 1.0 is obsolete (RFC 8996); pyOpenSSL has no name for DTLS 1.2's version number.
        context.set_min_proto_version(_DTLS1_2_VERSION)
        context.use_certificate(_pyopenssl_certificate(certificate))
        context.use_privatekey(_pyopenssl_key(certificate))
        context.check_privatekey()
        context.set_tlsext_use_srtp(":".join(self.profiles).encode("ascii"))
        # Memory BIOs cannot report a path MTU; we set it per connection instead.
        context.set_options(SSL.OP_NO_QUERY_MTU)
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
        self.context = context

    def fingerprint(self, hash_name: str = "sha-256") -> Fingerprint:
        return self.certificate.fingerprint(hash_name)


def _pyopenssl_certificate(certificate: DTLSCertificate) -> crypto.X509:
    return crypto.X509.from_cryptography(certificate.certificate)


def _pyopenssl_key(certificate: DTLSCertificate) -> crypto.PKey:
    return crypto.PKey.from_cryptography_key(certificate.private_key)  # type: ignore[arg-type]


def _records(data: bytes) -> list[bytes]:
    """Split what OpenSSL wrote to the memory BIO into DTLS records (it concatenates them)."""
    records = []
    offset = 0
    while offset + _RECORD_HEADER <= len(data):
        length = int.from_bytes(data[offset + 11 : offset + 13], "big")
        end = offset + _RECORD_HEADER + length
        records.append(data[offset:end])
        offset = end
    if offset < len(data):
        records.append(data[offset:])  # cannot happen with OpenSSL; never drop bytes silently
    return records


def pack_datagrams(data: bytes, mtu: int) -> list[bytes]:
    """Group whole records into datagrams of at most ``mtu`` bytes (RFC 6347 §4.1.1: a record
    never spans datagrams; several may share one)."""
    datagrams: list[bytes] = []
    current = b""
    for record in _records(data):
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


class DTLSEndpoint:
    """One DTLS-SRTP association: the handshake, then alerts (the keys are exported once)."""

    def __init__(
        self,
        context: DTLSContext,
        *,
        role: DTLSRole,
        remote_fingerprints: Sequence[Fingerprint],
        send: Callable[[bytes], object],
        clock: IReactorTime,
        on_keys: Callable[[SRTPKeys], object],
        on_failure: Callable[[str], object],
        handshake_timeout: float = 30.0,
        mtu: int = DEFAULT_MTU,
        log_fields: dict[str, object] | None = None,
    ) -> None:
        self.role = role
        self.remote_fingerprints = list(remote_fingerprints)
        self._send = send
        self._clock = clock
        self._on_keys = on_keys
        self._on_failure = on_failure
        self._handshake_timeout = handshake_timeout
        self._mtu = mtu
        self._log_fields = dict(log_fields or {})
        self._profiles = context.profiles
        self.state = "new"  # new -> handshaking -> connected | failed; closed at the end
        self.failure: str | None = None
        self.keys: SRTPKeys | None = None
        self.mismatch: str | None = None  # set by the verify callback
        self.retransmissions = 0
        self._retransmit_call: IDelayedCall | None = None
        self._deadline_call: IDelayedCall | None = None
        connection = SSL.Connection(context.context, None)
        connection.set_app_data(self)
        connection.set_ciphertext_mtu(mtu)
        if role is DTLSRole.ACTIVE:
            connection.set_connect_state()
        else:
            connection.set_accept_state()
        self._connection = connection

    # -- driving ------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin: the active side sends its ClientHello, the passive side waits for one.

        Both start the handshake deadline, so a peer that never answers is reported too.
        """
        if self.state != "new":
            return
        self.state = "handshaking"
        self._deadline_call = self._clock.callLater(self._handshake_timeout, self._deadline)
        if self.role is DTLSRole.ACTIVE:
            self._step()

    def datagram_received(self, data: bytes) -> None:
        """A DTLS datagram from the peer (first byte 20-63).  Never raises."""
        if self.state in ("failed", "closed"):
            return
        if self.state == "new":
            self.start()
        try:
            self._connection.bio_write(data)
        except SSL.Error as exc:
            self._fail(f"DTLS input rejected: {_describe(exc)}")
            return
        if self.state == "handshaking":
            self._step()
        else:
            self._read_after_handshake()

    def close(self) -> None:
        """End the association: cancel timers, tell a connected peer (close_notify)."""
        if self.state == "closed":
            return
        if self.state == "connected":
            try:
                self._connection.shutdown()
            except SSL.Error:
                pass  # the peer may already be gone; nothing to tell it then
            self._flush()
        self.state = "closed"
        self._cancel_timers()

    # -- internals ---------------------------------------------------------------------------

    def _step(self) -> None:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._schedule_retransmit()
            return
        except SSL.Error as exc:
            self._flush()  # the alert that tells the peer why
            self._fail(self.mismatch or f"DTLS handshake failed: {_describe(exc)}")
            return
        self._flush()
        self._handshake_done()

    def _handshake_done(self) -> None:
        self._cancel_timers()
        try:
            keys = self._export()
        except (FingerprintMismatch, ValueError, SSL.Error) as exc:
            self._fail(str(exc))
            return
        self.state = "connected"
        self.keys = keys
        log.info(
            "DTLS-SRTP handshake done as {role}, profile {profile}",
            role=self.role.value,
            profile=keys.profile,
            **self._log_fields,
        )
        self._on_keys(keys)

    def _export(self) -> SRTPKeys:
        peer = self._connection.get_peer_certificate()
        if peer is None:
            raise FingerprintMismatch("peer presented no certificate")
        # Checked again after the handshake: the verify callback is not called on resumption.
        check_fingerprints(peer.to_cryptography(), self.remote_fingerprints)
        selected = self._connection.get_selected_srtp_profile()
        profile = selected.decode("ascii") if selected else ""
        if profile not in DTLS_PROFILES:
            raise ValueError(
                "DTLS handshake negotiated no SRTP profile (use_srtp extension missing or no "
                f"common profile; offered {', '.join(self._profiles)})"
            )
        key_len, salt_len = profile_lengths(profile)
        material = self._connection.export_keying_material(EXPORTER_LABEL, 2 * (key_len + salt_len))
        return split_keying_material(material, profile, self.role)

    def _read_after_handshake(self) -> None:
        # After the handshake the peer may retransmit its last flight (ours was lost: OpenSSL
        # answers it), send a close_notify, or send application data we have no use for.
        try:
            while True:
                self._connection.recv(_READ_SIZE)
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            log.info("DTLS peer closed the association", **self._log_fields)
            self.state = "closed"
        except SSL.Error as exc:
            log.warn("DTLS error after the handshake: {error}", error=_describe(exc), **self._log_fields)
        self._flush()

    def _flush(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self._connection.bio_read(_READ_SIZE)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            pending += chunk
        for datagram in pack_datagrams(pending, self._mtu):
            self._send(datagram)

    def _schedule_retransmit(self) -> None:
        if self._retransmit_call is not None and self._retransmit_call.active():
            self._retransmit_call.cancel()
        self._retransmit_call = None
        timeout = self._connection.DTLSv1_get_timeout()
        if timeout is None:
            return
        delay = max(float(timeout), _MIN_RETRANSMIT_DELAY)
        self._retransmit_call = self._clock.callLater(delay, self._retransmit)

    def _retransmit(self) -> None:
        self._retransmit_call = None
        if self.state != "handshaking":
            return
        try:
            # OpenSSL also checks its own (wall) clock: if it says "not yet", we try again when
            # its remaining time has passed.
            if self._connection.DTLSv1_handle_timeout():
                self.retransmissions += 1
        except SSL.Error as exc:
            self._fail(f"DTLS retransmission failed: {_describe(exc)}")
            return
        self._flush()
        self._schedule_retransmit()

    def _deadline(self) -> None:
        self._deadline_call = None
        if self.state == "handshaking":
            self._fail(
                f"DTLS handshake as {self.role.value} did not complete within "
                f"{self._handshake_timeout:g} s ({self.retransmissions} retransmissions)"
            )

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "closed"):
            return
        self.state = "failed"
        self.failure = reason
        self._cancel_timers()
        log.warn("DTLS-SRTP failed: {reason}", reason=reason, **self._log_fields)
        self._on_failure(reason)

    def _cancel_timers(self) -> None:
        for call in (self._retransmit_call, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._retransmit_call = None
        self._deadline_call = None


def _describe(exc: SSL.Error) -> str:
    """OpenSSL's error stack as one readable line (it is a list of (lib, func, reason))."""
    parts = []
    for entry in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            parts.append(str(entry[-1]))
    return "; ".join(parts) or type(exc).__name__
