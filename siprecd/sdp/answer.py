"""Deciding what to record from an offer, and writing the SRS's answer (RFC 3264, RFC 7866).

Two steps so that the caller allocates ports only for streams it will record:

1. :func:`plan_streams` looks at the offer and says, per m-line, whether it is recordable, with
   which codec, and if not, why;
2. :func:`build_answer` takes the ports the caller allocated and writes the answer.

The SRS only receives: recordable streams are answered ``recvonly`` (or ``inactive`` when the
offerer will not send), everything else with port 0.

Secured media is decided by a ``security`` planner (``SecurityPolicy.decide`` from
:mod:`siprecd.security.policy`): per m-line it refuses, accepts plain RTP, or agrees a key
exchange whose answer attributes (``a=crypto``, ``a=fingerprint``...) the answer carries.  The
answer's proto mirrors the offer's m-line (RTP/AVP with ``a=crypto`` stays RTP/AVP).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from siprecd.sdp.model import (
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SDPError,
    SessionDescription,
    Timing,
)

__all__ = ["SECURE_PROTOS", "StreamChoice", "build_answer", "plan_streams", "security_refusal"]

_RECORDABLE_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF"})
SECURE_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"})
_RECORDABLE_SECURE_PROTOS = _RECORDABLE_PROTOS | SECURE_PROTOS
# SDES keys, DTLS-SRTP fingerprints and MIKEY: any of them means the media will be encrypted.
_SECURITY_ATTRIBUTES = ("crypto", "fingerprint", "key-mgmt")
# Payload formats that ride along with a voice codec and are never a stream's codec by themselves.
_NOT_A_CODEC = frozenset({"telephone-event", "cn", "red", "ulpfec", "flexfec", "rtx"})
_SRTP_NO_POLICY = "secured media (SRTP) refused: no [security] policy given"
# m-line, session -> an object with ``refusal`` (str | None) and ``negotiated`` (or None).
SecurityPlanner = Callable[[MediaDescription, SessionDescription], Any]


@dataclass(frozen=True, slots=True)
class StreamChoice:
    """What the SRS does with offered m-line ``index`` (0-based, the position in the offer)."""

    index: int
    media_type: str
    label: str | None
    accepted: bool
    # Direction the answer carries: "recvonly", or "inactive" (offerer will not send, or rejected).
    direction: str
    offered_direction: str
    on_hold: bool
    payload_type: int | None = None
    codec: str | None = None
    clock_rate: int | None = None
    channels: int | None = None
    telephone_event_pt: int | None = None
    reason: str | None = None
    # The RTP port in the answer; None from plan_streams, set by build_answer (0 when rejected).
    port: int | None = None
    # The key exchange agreed (security.policy.Negotiated), None for plain RTP.
    security: Any = None


def security_refusal(m: MediaDescription, session: SessionDescription) -> str | None:
    """Without a security planner: why a secured m-line is refused, or None for plain RTP.

    DTLS fingerprints and MIKEY may sit at session level, so the session is looked at too.
    """
    if m.proto.upper() in SECURE_PROTOS:
        return _SRTP_NO_POLICY
    for name in _SECURITY_ATTRIBUTES:
        if m.has_attribute(name) or session.has_attribute(name):
            return _SRTP_NO_POLICY
    return None


def _refusal(
    m: MediaDescription, session: SessionDescription, record_video: bool, security: SecurityPlanner | None
) -> tuple[str | None, Any]:
    """(why the m-line is not recorded or None, the security agreement or None)."""
    if m.port == 0:
        return "offered with port 0 (stream disabled)", None
    media = m.media.lower()
    if media != "audio" and not (media == "video" and record_video):
        return f"{m.media} not recorded", None
    if m.proto.upper() not in _RECORDABLE_SECURE_PROTOS:
        return f"transport {m.proto!r} not supported", None
    if security is None:
        return security_refusal(m, session), None
    decision = security(m, session)
    return decision.refusal, decision.negotiated


def _parse_preference(entry: str) -> tuple[str, int | None, int | None]:
    """``"PCMU"`` or ``"opus/48000/2"`` -> (lower-case name, clock or None, channels or None)."""
    name, *numbers = entry.strip().split("/")
    if not name or len(numbers) > 2 or not all(n.isdigit() for n in numbers):
        raise ValueError(f"codec preference entry must be 'NAME[/clock[/channels]]': {entry!r}")
    clock = int(numbers[0]) if numbers else None
    channels = int(numbers[1]) if len(numbers) == 2 else None
    return name.lower(), clock, channels


def _choose_codec(m: MediaDescription, preference: Sequence[str]) -> tuple[str, RtpMap] | None:
    # The SRS's preference decides, not the offer's order: what we can store and transcode
    # matters more than what the SRC happens to list first.
    offered = m.rtpmaps
    for entry in preference:
        name, clock, channels = _parse_preference(entry)
        if name in _NOT_A_CODEC:
            continue
        for pt, rtpmap in offered.items():
            if (
                rtpmap.encoding.lower() == name
                and (clock is None or rtpmap.clock_rate == clock)
                and (channels is None or rtpmap.channels == channels)
            ):
                return pt, rtpmap
    return None


def _telephone_event(m: MediaDescription, clock_rate: int) -> str | None:
    # RFC 4733 events share the codec's timestamp clock; one at another rate is unusable here.
    for pt, rtpmap in m.rtpmaps.items():
        if rtpmap.encoding.lower() == "telephone-event" and rtpmap.clock_rate == clock_rate:
            return pt
    return None


def _offered_codecs(m: MediaDescription) -> str:
    known = m.rtpmaps
    return ", ".join(str(known[pt]) if pt in known else pt for pt in m.formats)


def _answer_direction(offered: str) -> str:
    # The SRS never sends media: it receives what the offerer sends and nothing else.
    return "recvonly" if offered in ("sendonly", "sendrecv") else "inactive"


def plan_streams(
    offer: SessionDescription,
    *,
    codec_preference: Sequence[str],
    record_video: bool = False,
    security: SecurityPlanner | None = None,
) -> list[StreamChoice]:
    """Say for each offered m-line whether it will be recorded, before any port is allocated.

    Inactive and on-hold m-lines are recordable (answered ``inactive``) so that their ports
    survive until the call resumes.  Raises SDPError listing every m-line's reason when the
    offer has m-lines but none is recordable; an offer without m-lines is legal.
    ``codec_preference`` entries are ``NAME[/clock[/channels]]``, compared case-insensitively.
    ``security`` decides secured m-lines (without it they are refused).
    """
    choices: list[StreamChoice] = []
    for index, m in enumerate(offer.media):
        offered_direction = m.direction(offer)
        base = StreamChoice(
            index=index,
            media_type=m.media,
            label=m.label,
            accepted=False,
            direction="inactive",
            offered_direction=offered_direction,
            on_hold=m.on_hold(offer),
        )
        reason, negotiated = _refusal(m, offer, record_video, security)
        chosen = _choose_codec(m, codec_preference) if reason is None else None
        if reason is None and chosen is None:
            reason = f"no acceptable codec (offered: {_offered_codecs(m)})"
        if reason is not None or chosen is None:
            choices.append(dataclasses.replace(base, reason=reason))
            continue
        pt, rtpmap = chosen
        event_pt = _telephone_event(m, rtpmap.clock_rate) if m.media.lower() == "audio" else None
        choices.append(
            dataclasses.replace(
                base,
                accepted=True,
                direction=_answer_direction(offered_direction),
                payload_type=int(pt),
                codec=rtpmap.encoding,
                clock_rate=rtpmap.clock_rate,
                channels=rtpmap.channels,
                telephone_event_pt=int(event_pt) if event_pt is not None else None,
                security=negotiated,
            )
        )
    if choices and not any(choice.accepted for choice in choices):
        total = len(choices)
        details = "; ".join(
            f"m-line {c.index + 1}/{total} ({c.media_type}"
            + (f", label '{c.label}'" if c.label is not None else "")
            + f"): {c.reason}"
            for c in choices
        )
        raise SDPError(f"nothing to record: {details}")
    return choices


def _addrtype(address: str) -> str:
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        raise ValueError(f"SRS media address must be an IP address, got {address!r}") from None
    return "IP6" if version == 6 else "IP4"


def _attribute_for_pt(m: MediaDescription, name: str, pt: str) -> str | None:
    """The offerer's own a=<name>:<pt> ... value, to echo it byte for byte."""
    for value in m.attribute_values(name):
        if value is not None and value.split(" ", 1)[0] == pt:
            return value
    return None


def _reject(choice: StreamChoice, reason: str) -> StreamChoice:
    return dataclasses.replace(
        choice,
        accepted=False,
        direction="inactive",
        payload_type=None,
        codec=None,
        clock_rate=None,
        channels=None,
        telephone_event_pt=None,
        reason=reason,
        port=0,
        security=None,
    )


def _recorded_media(
    m: MediaDescription,
    choice: StreamChoice,
    port: int,
    connection: Connection,
    announce_rtcp: bool,
) -> MediaDescription:
    pts = [str(choice.payload_type)]
    if choice.telephone_event_pt is not None:
        pts.append(str(choice.telephone_event_pt))
    attributes: list[tuple[str, str | None]] = []
    for pt in pts:
        rtpmap = _attribute_for_pt(m, "rtpmap", pt) or f"{pt} {m.rtpmaps[pt]}"
        attributes.append(("rtpmap", rtpmap))
        fmtp = _attribute_for_pt(m, "fmtp", pt)
        if fmtp is not None:
            attributes.append(("fmtp", fmtp))
    ptime = m.attribute("ptime")
    if ptime is not None:
        attributes.append(("ptime", ptime))
    if announce_rtcp:
        attributes.append(("rtcp", str(port + 1)))
    if choice.security is not None:
        attributes.extend(choice.security.attributes)
    if choice.label is not None:
        attributes.append(("label", choice.label))
    attributes.append((choice.direction, None))
    return MediaDescription(
        media=m.media,
        port=port,
        proto=m.proto,
        formats=pts,
        connections=[dataclasses.replace(connection)],
        attributes=attributes,
    )


def build_answer(
    offer: SessionDescription,
    *,
    address: str,
    ports: Sequence[int | None],
    codec_preference: Sequence[str],
    origin_session_id: int,
    origin_version: int,
    username: str = "siprecd",
    record_video: bool = False,
    announce_rtcp: bool = False,
    security: SecurityPlanner | None = None,
    plan: Sequence[StreamChoice] | None = None,
) -> tuple[SessionDescription, list[StreamChoice]]:
    """Answer ``offer`` with one m-line per offered m-line, in order (RFC 3264 §6).

    ``ports[i]`` is the RTP port allocated for offered m-line ``i`` (RTCP on port+1), or None
    when it is not recorded; give ports only where :func:`plan_streams` (called with the same
    preference) said ``accepted``.  ``origin_version`` must grow with every answer in a dialog
    (RFC 3264 §8).  Raises SDPError like plan_streams, ValueError for a caller mistake.
    ``plan``: the caller's own :func:`plan_streams` result (security agreements carry fresh
    keys: planning twice would answer other keys than the ones installed).
    """
    if len(ports) != len(offer.media):
        raise ValueError(f"{len(ports)} ports given for {len(offer.media)} offered m-lines")
    if origin_session_id < 0 or origin_version < 0:
        raise ValueError("origin session id and version must not be negative")
    if not username or any(ch.isspace() for ch in username):
        raise ValueError(f"o= username must be one non-empty token, got {username!r}")
    addrtype = _addrtype(address)
    connection = Connection("IN", addrtype, address)
    if plan is None:
        plan = plan_streams(offer, codec_preference=codec_preference, record_video=record_video, security=security)
    elif len(plan) != len(offer.media):
        raise ValueError(f"plan has {len(plan)} choices for {len(offer.media)} offered m-lines")

    media: list[MediaDescription] = []
    choices: list[StreamChoice] = []
    for m, choice, port in zip(offer.media, plan, ports):
        if port is not None and not choice.accepted:
            raise ValueError(f"port given for m-line {choice.index}, not recorded: {choice.reason}")
        if port is not None and not 0 < port < 65535:
            raise ValueError(f"RTP port for m-line {choice.index} must be 1-65534, got {port}")
        if port is None:
            choice = _reject(choice, choice.reason or "no port allocated")
            # RFC 3264 §6: a rejected stream keeps its type and proto and lists one format.
            media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
        else:
            choice = dataclasses.replace(choice, port=port)
            media.append(_recorded_media(m, choice, port, connection, announce_rtcp))
        choices.append(choice)

    origin = Origin(username, str(origin_session_id), str(origin_version), "IN", addrtype, address)
    answer = SessionDescription(
        origin=origin,
        name="-",
        # Session-level c= as well, so that port-0 m-lines (which carry none) still satisfy
        # RFC 8866 §5.7 for peers that check it.
        connections=[connection] if media else [],
        timing=[Timing(0, 0)],
        media=media,
    )
    return answer, choices
