"""A DTLS-SRTP SIPREC SRC for end-to-end tests: :class:`tests.e2e.src.SRCClient` with a DTLS
handshake on its RTP socket and SRTP on the wire.

The DTLS side is written here with pyOpenSSL directly (blocking, memory BIOs, OpenSSL's own
retransmission timer on the wall clock), not with siprecd's endpoint, so the test pits the
server against a separate implementation.  SRTP is libsrtp (pylibsrtp) with the keys the
handshake exported.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Sequence

import pylibsrtp
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from siprecd.security.certificate import generate_certificate
from siprecd.security.suites import DTLS_PROFILES, SUITES
from tests.e2e.src import SRCClient

PROFILES = tuple(DTLS_PROFILES)  # offered in this order: AES128_CM_SHA1_80 first


class SRTPSocket:
    """The RTP socket as SRCClient.send_rtp sees it: sendto protects RTP with the SRC's key."""

    def __init__(self, sock: socket.socket, session: pylibsrtp.Session) -> None:
        self._sock = sock
        self._session = session
        self.sent = 0

    def sendto(self, packet: bytes, address: tuple[str, int]) -> int:
        self.sent += 1
        return self._sock.sendto(self._session.protect(packet), address)

    def __getattr__(self, name: str):  # close, getsockname, ...
        return getattr(self._sock, name)


class DTLSSRCClient(SRCClient):
    """An SRC whose streams (see :meth:`dtls_attributes`) offer ``UDP/TLS/RTP/SAVP`` with its
    fingerprint; after the 200 OK, :meth:`handshake` runs DTLS in the role the answer left it,
    and from then on ``send_rtp`` sends SRTP.  One stream per call: one association."""

    def __init__(self, server_port: int, *, profiles: Sequence[str] = PROFILES) -> None:
        super().__init__(server_port)
        identity = generate_certificate()
        der = identity.certificate.public_bytes(serialization.Encoding.DER)
        self.fingerprint = "sha-256 " + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        context = SSL.Context(SSL.DTLS_METHOD)
        context.use_certificate(crypto.X509.from_cryptography(identity.certificate))
        context.use_privatekey(crypto.PKey.from_cryptography_key(identity.private_key))
        context.set_tlsext_use_srtp(":".join(profiles).encode())
        context.set_options(SSL.OP_NO_QUERY_MTU)
        # Self-signed on both sides: accept here, compare with the answer's fingerprint after.
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        self.context = context
        self.plain_rtp = self.rtp
        self.profile: str | None = None
        self.srs_address: tuple[str, int] | None = None

    def dtls_attributes(self, setup: str = "actpass", tls_id: str = "siprecd-test-dtls-src-0001") -> dict:
        """StreamSpec fields for a DTLS-SRTP m-line of this SRC."""
        return {
            "proto": "UDP/TLS/RTP/SAVP",
            "extra_attributes": [f"setup:{setup}", f"fingerprint:{self.fingerprint}", f"tls-id:{tls_id}"],
        }

    def _answer(self) -> tuple[str | None, list[str], tuple[str, int]]:
        answer = self.answer
        m = answer.media[0]
        fingerprints = [v or "" for v in m.attribute_values("fingerprint")]
        return m.attribute("setup"), fingerprints, (m.connection_address(answer) or "127.0.0.1", m.port)

    def handshake(self, timeout: float = 10.0) -> str:
        """Run DTLS with the SRS on the RTP socket; returns the profile.  Raises on failure."""
        setup, fingerprints, self.srs_address = self._answer()
        assert setup in ("active", "passive"), setup
        connection = SSL.Connection(self.context, None)
        connection.set_ciphertext_mtu(1200)
        if setup == "passive":  # the SRS waits: we are the client
            connection.set_connect_state()
        else:
            connection.set_accept_state()
        sock = self.plain_rtp
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection.do_handshake()
                done = True
            except SSL.WantReadError:
                done = False
            self._flush(connection, sock)
            if done:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"DTLS handshake with the SRS (SRS {setup}) timed out")
            wait = connection.DTLSv1_get_timeout()
            sock.settimeout(min(wait, 0.5) if wait else 0.5)
            try:
                data, address = sock.recvfrom(65535)
            except TimeoutError:
                connection.DTLSv1_handle_timeout()
                self._flush(connection, sock)
                continue
            if address == self.srs_address and data and 20 <= data[0] <= 63:
                connection.bio_write(data)
        sock.settimeout(5)
        peer = connection.get_peer_certificate()
        der = peer.to_cryptography().public_bytes(serialization.Encoding.DER)
        actual = "sha-256 " + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        if actual not in fingerprints:
            raise AssertionError(f"SRS certificate {actual} is not the answer's {fingerprints}")
        profile = connection.get_selected_srtp_profile().decode()
        suite = SUITES[DTLS_PROFILES[profile]]
        libsrtp_profile, key_len, salt_len = suite.libsrtp_profile, suite.key_length, suite.salt_length
        material = connection.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len))
        client_key, server_key = material[:key_len], material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        mine = (client_key + client_salt) if setup == "passive" else (server_key + server_salt)
        session = pylibsrtp.Session(
            policy=pylibsrtp.Policy(key=mine, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=libsrtp_profile)
        )
        self.rtp = SRTPSocket(sock, session)  # type: ignore[assignment]
        self.profile = profile
        self._connection = connection
        return profile

    def _flush(self, connection: SSL.Connection, sock: socket.socket) -> None:
        assert self.srs_address is not None
        while True:
            try:
                data = connection.bio_read(65536)
            except SSL.WantReadError:
                return
            sock.sendto(data, self.srs_address)

    def close(self) -> None:
        self.plain_rtp.close()
        self.sip.close()
