"""The DTLS-SRTP side of one recorded stream, across the offers of a dialog.

The key exchange (:mod:`siprecd.security.dtls_method`) decides per offer whether the stream
keeps its association (same fingerprints, tls-id and role) or needs a new one, which
:meth:`StreamDTLS.start` makes; the active role handshakes towards the offer's address (or
where the peer's media already comes from).  DTLS datagrams arrive from the stream's RTP socket (RFC 7983 demultiplexing happens
there) and leave through the same socket, so the SRTP keys bind to the media 5-tuple.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from siprecd.security.dtls import DTLSContext, DTLSEndpoint, DTLSRole, SRTPKeys
from siprecd.security.dtls_sdp import DTLSAnswer, DTLSOffer
from siprecd.security.suites import DTLS_PROFILES

__all__ = ["DTLSSettings", "StreamDTLS"]

log = Logger()

Address = tuple[str, int]


class DTLSSettings:
    """What every stream's DTLS shares: the process's context and the configured policy."""

    def __init__(
        self,
        context: DTLSContext,
        clock: IReactorTime,
        *,
        preferred: DTLSRole = DTLSRole.ACTIVE,
        handshake_timeout: float = 30.0,
    ) -> None:
        self.context = context
        self.clock = clock
        self.preferred = preferred
        self.handshake_timeout = handshake_timeout


class StreamDTLS:
    """One stream's DTLS association(s).  ``install(keys)`` is called for every completed
    handshake (a new association rekeys the stream); ``on_failure(reason)`` when one fails."""

    def __init__(
        self,
        settings: DTLSSettings,
        *,
        write: Callable[[bytes, Address], object],
        install: Callable[[SRTPKeys], object],
        on_failure: Callable[[str], object],
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._write = write
        self._install = install
        self._on_failure = on_failure
        self._log_fields = dict(log_fields or {})
        self.endpoint: DTLSEndpoint | None = None
        self.offer: DTLSOffer | None = None
        self.answer: DTLSAnswer | None = None
        self._start_call: IDelayedCall | None = None
        self.peer: Address | None = None  # where DTLS datagrams go and are accepted from
        self._peer_confirmed = False  # a datagram came from ``peer`` (not only the SDP said so)
        self.handshakes = 0
        self.failures = 0
        self.other_source = 0

    # -- associations ------------------------------------------------------------------------

    def start(self, offer: DTLSOffer, answer: DTLSAnswer, remote: Address | None) -> None:
        """A new association for an agreed offer/answer (the old one, if any, is closed).

        ``remote`` is where the peer's media is: the latched source if media already came,
        else the offer's connection address and port (None on hold: wait for the peer).  The
        active side sends its ClientHello on the next turn of the clock, after the answer that
        tells the peer our fingerprint has gone out.
        """
        self.close()
        self.offer, self.answer = offer, answer
        self._peer_confirmed = False
        self.peer = remote
        if answer.role is None:
            self.endpoint = None
            return  # holdconn: no connection until a later offer asks for one
        self.endpoint = DTLSEndpoint(
            self.settings.context,
            role=answer.role,
            remote_fingerprints=offer.fingerprints,
            send=self._send,
            clock=self.settings.clock,
            on_keys=self._keys,
            on_failure=self._failed,
            handshake_timeout=self.settings.handshake_timeout,
            log_fields=self._log_fields,
        )
        if answer.role is DTLSRole.PASSIVE:
            self.endpoint.start()
        elif remote is not None:
            self._start_call = self.settings.clock.callLater(0, self._start_active, self.endpoint)
        # An active SRS with nowhere to send (offer on hold) starts on the peer's first datagram.

    def _start_active(self, endpoint: DTLSEndpoint) -> None:
        self._start_call = None
        endpoint.start()

    # -- datagrams ---------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """A DTLS datagram (RFC 7983: first byte 20-63) on the stream's RTP port."""
        endpoint = self.endpoint
        if endpoint is None:
            self.other_source += 1  # no association expected (plain or holdconn): drop
            return
        if self._peer_confirmed and addr != self.peer:
            self.other_source += 1  # one association per stream: a second peer is not heard
            return
        self.peer = addr
        self._peer_confirmed = True
        endpoint.datagram_received(data)

    def _send(self, data: bytes) -> None:
        if self.peer is None:
            return
        try:
            self._write(data, self.peer)
        except OSError as exc:
            # The retransmission timer tries again; a dead route ends in the handshake timeout.
            log.warn("DTLS datagram to {peer} not sent: {error}", peer=self.peer, error=exc, **self._log_fields)

    def _keys(self, keys: SRTPKeys) -> None:
        self.handshakes += 1
        self._install(keys)

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self._on_failure(reason)

    def close(self) -> None:
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        self._start_call = None
        if self.endpoint is not None:
            self.endpoint.close()

    # -- reporting ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """For session.json: never key material."""
        endpoint = self.endpoint
        keys = endpoint.keys if endpoint is not None else None
        return {
            "role": self.answer.role.value if self.answer is not None and self.answer.role else None,
            "setup": self.answer.setup if self.answer is not None else None,
            "profile": keys.profile if keys is not None else None,
            "suite": DTLS_PROFILES[keys.profile] if keys is not None else None,
            "state": endpoint.state if endpoint is not None else "none",
            "failure": endpoint.failure if endpoint is not None else None,
            "handshakes": self.handshakes,
            "retransmissions": endpoint.retransmissions if endpoint is not None else 0,
            "peer_fingerprint_hashes": sorted({f.hash_name for f in self.offer.fingerprints}) if self.offer else [],
        }
