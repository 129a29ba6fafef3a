"""DTLS-SRTP as a key exchange of the ``[security]`` policy (registered as ``dtls-srtp``).

``negotiate`` reads the offer (fingerprints, a=setup, a=tls-id) and writes the answer's
attributes; the policy keeps the agreement across re-offers while its identity (fingerprints,
tls-id, the SRS's role) is unchanged.  ``activate`` starts a new association on the stream's
RTP port; until its handshake has exported keys, everything but DTLS is dropped (counted as
unauthenticated), and a new association of a stream that already has keys leaves the old
ones working until the new ones are installed (then the usual rekey grace applies).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from siprecd.config import SecurityConfig
from siprecd.sdp.model import SDPError
from siprecd.security.certificate import CertificateError, DTLSCertificate, generate_certificate, load_certificate
from siprecd.security.dtls import DTLSContext, DTLSRole, SRTPKeys
from siprecd.security.dtls_sdp import (
    DTLS_CAPABLE_PROTOS,
    DTLSAnswer,
    DTLSOffer,
    answer_attributes,
    association_identity,
    is_dtls_offer,
    parse_dtls_offer,
    plan_answer,
)
from siprecd.security.dtls_stream import DTLSSettings, StreamDTLS
from siprecd.security.policy import Negotiated
from siprecd.security.srtp import InboundSRTP, OutboundSRTCP, SRTPError
from siprecd.security.suites import DTLS_PROFILES

if TYPE_CHECKING:
    from siprecd.media.receiver import StreamMedia
    from siprecd.sdp.model import MediaDescription, SessionDescription
    from siprecd.security.policy import SecurityPolicy

__all__ = ["AwaitingKeys", "DTLSSRTP", "dtls_certificate", "dtls_profiles"]

METHOD = "dtls-srtp"
RTP, RTCP = "rtp", "rtcp"  # the components (RFC 5764 §4.1.2): RTCP has its own without rtcp-mux


class AwaitingKeys:
    """The inbound context of a DTLS-SRTP stream before its first handshake: nothing passes,
    so plain RTP sent to a secured stream is never recorded."""

    awaiting_keys = True

    def unprotect_rtp(self, packet: bytes) -> bytes:
        raise SRTPError("DTLS-SRTP handshake not complete")

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        raise SRTPError("DTLS-SRTP handshake not complete")


@dataclass(frozen=True)
class _Plan:
    offer: DTLSOffer
    answer: DTLSAnswer
    remote: tuple[str, int] | None  # the offer's media address, None on hold
    rtcp_remote: tuple[str, int] | None  # its RTCP address (a=rtcp, else RTP port + 1)
    rtcp_mux: bool


def dtls_profiles(suites: tuple[str, ...]) -> tuple[str, ...]:
    """The DTLS-SRTP profiles of the allowed suites, in the suites' preference order."""
    by_suite = {suite: profile for profile, suite in DTLS_PROFILES.items()}
    return tuple(by_suite[s] for s in suites if s in by_suite)


def dtls_certificate(config: SecurityConfig) -> DTLSCertificate:
    """The configured certificate, or a fresh one; CertificateError names the file."""
    if not config.dtls_certificate or not config.dtls_private_key:
        return generate_certificate()
    where = f"[security] dtls_certificate = {config.dtls_certificate}"
    try:
        with open(config.dtls_certificate, "rb") as handle:
            certificate = handle.read()
    except OSError as exc:
        raise CertificateError(f"{where}: {exc.strerror}") from None
    try:
        with open(config.dtls_private_key, "rb") as handle:
            key = handle.read()
    except OSError as exc:
        raise CertificateError(f"[security] dtls_private_key = {config.dtls_private_key}: {exc.strerror}") from None
    return load_certificate(certificate, key, where=where)


class DTLSSRTP:
    """The ``dtls-srtp`` key exchange (RFC 5763/5764)."""

    name = METHOD

    def __init__(
        self,
        settings: DTLSSettings,
        *,
        sessions: Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions: Counter[tuple[str, str]] = sessions if sessions is not None else Counter()
        # (outcome, SRS role, profile, component) -> handshakes, for siprecd_dtls_handshakes_total
        self.handshakes: Counter[tuple[str, str, str, str]] = Counter()

    @classmethod
    def from_config(cls, config: SecurityConfig, clock: IReactorTime, **kwargs: Any) -> DTLSSRTP:
        profiles = dtls_profiles(config.suites)
        if not profiles:
            raise ValueError("[security] suites allows no suite that DTLS-SRTP has a profile for")
        context = DTLSContext(dtls_certificate(config), profiles)
        settings = DTLSSettings(
            context,
            clock,
            preferred=DTLSRole(config.dtls_setup),
            handshake_timeout=config.dtls_handshake_timeout,
        )
        return cls(settings, **kwargs)

    def offered(self, m: MediaDescription, session: SessionDescription) -> bool:
        return is_dtls_offer(m, session)

    def negotiate(self, m: MediaDescription, session: SessionDescription, policy: SecurityPolicy) -> Negotiated | str:
        if m.proto.upper() not in DTLS_CAPABLE_PROTOS:
            # A fingerprint on RTP/AVP: the answer could not ask for SRTP on that proto.
            return f"a=fingerprint on {m.proto}: DTLS-SRTP needs UDP/TLS/RTP/SAVP(F)"
        try:
            offer = parse_dtls_offer(m, session)
        except SDPError as error:
            return error.warning
        preferred = self.settings.preferred
        answer = plan_answer(offer, preferred=preferred, fingerprint=self.settings.context.fingerprint("sha-256"))
        address = m.connection_address(session)
        remote = (address, m.port) if address and m.port and not m.on_hold(session) else None
        rtcp_remote = None
        if remote is not None:
            rtcp = m.rtcp
            if rtcp is not None:
                rtcp_remote = (rtcp.address or address, rtcp.port)
            elif m.port < 65535:
                rtcp_remote = (address, m.port + 1)
        details: list[tuple[str, Any]] = [("setup", answer.setup), ("offered_setup", offer.setup)]
        attributes = answer_attributes(answer)
        # RFC 5761: accepted when offered, so one DTLS association (on the RTP port) keys both
        # RTP and RTCP; without it the peer would run a second one on the RTCP port.
        rtcp_mux = m.has_attribute("rtcp-mux")
        if rtcp_mux:
            attributes.append(("rtcp-mux", None))
            details.append(("rtcp_mux", True))
        return Negotiated(
            method=METHOD,
            suite=None,  # known once the handshake has chosen the profile
            attributes=tuple(attributes),
            details=tuple(details),
            identity=association_identity(offer, preferred),
            material=_Plan(offer, answer, remote, rtcp_remote, rtcp_mux),
        )

    def activate(self, negotiated: Negotiated, media: StreamMedia) -> bool:
        plan: _Plan = negotiated.material
        media.rtcp_mux = plan.rtcp_mux
        if media.inbound is None:
            media.secure(AwaitingKeys(), None)
        if media.dtls is None:
            media.dtls = self._stream(media, RTP)
        media.dtls.start(plan.offer, plan.answer, media.rtp.source or plan.remote)
        if plan.rtcp_mux:
            self._close_rtcp(media)
        else:
            # RFC 5764 §4.1.2: RTCP on its own port is its own component, keyed by its own
            # association with the same certificates and roles.
            if media.dtls_rtcp is None:
                media.dtls_rtcp = self._stream(media, RTCP)
            media.dtls_rtcp.start(plan.offer, plan.answer, media.rtcp.peer or plan.rtcp_remote)
        return False  # the contexts come with the handshake; counted then

    def deactivate(self, media: StreamMedia) -> None:
        """The stream is no longer DTLS-SRTP (a re-offer chose another method, or plain)."""
        media.rtcp_mux = False
        if media.dtls is not None:
            media.dtls.close()
            media.dtls = None
        self._close_rtcp(media)

    def _close_rtcp(self, media: StreamMedia) -> None:
        if media.dtls_rtcp is not None:
            media.dtls_rtcp.close()
            media.dtls_rtcp = None
        media.secure_rtcp(None, None)

    def _stream(self, media: StreamMedia, component: str) -> StreamDTLS:
        protocol = media.rtp if component == RTP else media.rtcp

        def write(data: bytes, addr: tuple[str, int]) -> None:
            transport = protocol.transport
            if transport is not None:  # None once the stream's ports are released
                transport.write(data, addr)

        return StreamDTLS(
            self.settings,
            write=write,
            install=lambda keys: self._install(media, keys, component),
            on_failure=lambda reason: self._failed(media, component),
            log_fields={**media.log_fields, "component": component},
        )

    def _install(self, media: StreamMedia, keys: SRTPKeys, component: str) -> None:
        suite = DTLS_PROFILES[keys.profile]
        inbound = InboundSRTP(suite, keys.remote_key, keys.remote_salt)
        outbound = OutboundSRTCP(suite, keys.local_key, keys.local_salt)
        if component == RTP:
            media.secure(inbound, outbound)
            self.sessions[METHOD, suite] += 1
        else:
            media.secure_rtcp(inbound, outbound)
        self.handshakes["completed", _role(media), keys.profile, component] += 1
        media.changed()

    def _failed(self, media: StreamMedia, component: str) -> None:
        self.handshakes["failed", _role(media), "", component] += 1
        media.changed()


def _role(media: StreamMedia) -> str:
    answer = media.dtls.answer if media.dtls is not None else None
    return answer.role.value if answer is not None and answer.role is not None else ""
