"""SDP for the SRS: the model, parse/serialize (RFC 8866) and offer/answer (RFC 3264, 7866).

Pure code: bytes in, dataclasses out, no I/O and no state between calls.
"""

from siprecd.sdp.answer import StreamChoice, build_answer, plan_streams, security_refusal
from siprecd.sdp.model import (
    DIRECTIONS,
    STATIC_PAYLOAD_TYPES,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    Rtcp,
    RtpMap,
    SDPError,
    SessionDescription,
    Timing,
)
from siprecd.sdp.parse import MAX_MEDIA, MAX_SDP_BYTES, parse, serialize

__all__ = [
    "Bandwidth",
    "Connection",
    "DIRECTIONS",
    "MAX_MEDIA",
    "MAX_SDP_BYTES",
    "MediaDescription",
    "Origin",
    "Rtcp",
    "RtpMap",
    "SDPError",
    "STATIC_PAYLOAD_TYPES",
    "SessionDescription",
    "StreamChoice",
    "Timing",
    "build_answer",
    "parse",
    "plan_streams",
    "security_refusal",
    "serialize",
]
