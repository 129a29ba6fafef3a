"""DTLS-SRTP in SDP: what an offer asks for and what the SRS answers (RFC 5763, 8122, 8842).

Pure code over the SDP model.  An offer's ``a=fingerprint`` and ``a=setup`` may sit at media
or session level (media level wins); ``a=tls-id`` (RFC 8842) is media level.  The answer
carries the SRS's sha-256 fingerprint and a definite role: ``active`` by default, as RFC 5763
§5 recommends, ``passive`` when configured, and whatever the offer leaves us when it is
itself ``active`` or ``passive``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from siprecd.sdp.model import MediaDescription, SDPError, SessionDescription
from siprecd.security.certificate import Fingerprint, fingerprints_of
from siprecd.security.dtls import DTLSRole

__all__ = [
    "DTLSAnswer",
    "DTLSOffer",
    "DTLS_CAPABLE_PROTOS",
    "DTLS_PROTOS",
    "SETUP_VALUES",
    "answer_attributes",
    "association_identity",
    "choose_role",
    "is_dtls_offer",
    "new_tls_id",
    "parse_dtls_offer",
    "plan_answer",
]

DTLS_PROTOS = frozenset({"UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"})
# Older stacks put a=fingerprint on RTP/SAVP(F) m-lines; the answer then keeps their proto.
DTLS_CAPABLE_PROTOS = DTLS_PROTOS | {"RTP/SAVP", "RTP/SAVPF"}
SETUP_VALUES = frozenset({"actpass", "active", "passive", "holdconn"})
# RFC 8842 §4: 20 to 255 characters from the base64 alphabet; 32 is plenty of randomness.
_TLS_ID_BYTES = 24


@dataclass(frozen=True, slots=True)
class DTLSOffer:
    """The DTLS parameters of one offered m-line."""

    fingerprints: tuple[Fingerprint, ...]
    setup: str  # actpass | active | passive | holdconn
    tls_id: str | None


@dataclass(frozen=True, slots=True)
class DTLSAnswer:
    """What the SRS answers for one m-line: its role and the values of its attributes."""

    role: DTLSRole | None  # None for holdconn: no connection for now
    setup: str
    fingerprint: Fingerprint
    tls_id: str | None


def is_dtls_offer(m: MediaDescription, session: SessionDescription) -> bool:
    """Whether the m-line offers DTLS-SRTP: a UDP/TLS proto, or a fingerprint on a SAVP one
    (older stacks; it may come beside a=crypto, and policy then picks the method)."""
    proto = m.proto.upper()
    if proto in DTLS_PROTOS:
        return True
    has_fingerprint = m.has_attribute("fingerprint") or session.has_attribute("fingerprint")
    return has_fingerprint and proto in DTLS_CAPABLE_PROTOS


def _where(index: int | None) -> str:
    # Without an index the caller names the m-line itself (the policy's reasons do).
    return f"m-line {index + 1}: " if index is not None else ""


def parse_dtls_offer(
    m: MediaDescription, session: SessionDescription, *, index: int | None = None
) -> DTLSOffer:
    """The DTLS parameters of ``m``; SDPError saying what is wrong and on which m-line."""
    where = _where(index)
    values = m.attribute_values("fingerprint") or session.attribute_values("fingerprint")
    if not values:
        raise SDPError(f"{where}DTLS-SRTP offer has no a=fingerprint (media or session level)")
    try:
        fingerprints = fingerprints_of(values)
    except ValueError as exc:
        raise SDPError(f"{where}a=fingerprint unusable: {exc}") from None
    setup_value = m.attribute("setup") or session.attribute("setup")
    # RFC 4145 §4: an offer without a=setup means active; RFC 5763 says it must be actpass,
    # but being lenient here costs nothing.
    setup = (setup_value or "active").strip().lower()
    if setup not in SETUP_VALUES:
        raise SDPError(
            f"{where}a=setup:{setup_value} is not one of {', '.join(sorted(SETUP_VALUES))}"
        )
    tls_id = m.attribute("tls-id")
    if tls_id is not None:
        tls_id = tls_id.strip()
        if not tls_id:
            raise SDPError(f"{where}a=tls-id is empty")
    return DTLSOffer(tuple(fingerprints), setup, tls_id)


def choose_role(offer_setup: str, preferred: DTLSRole) -> DTLSRole | None:
    """The SRS's role for an offer's a=setup (RFC 4145 §4, RFC 5763 §5); None for holdconn."""
    if offer_setup == "active":
        return DTLSRole.PASSIVE
    if offer_setup == "passive":
        return DTLSRole.ACTIVE
    if offer_setup == "holdconn":
        return None
    return preferred


def plan_answer(offer: DTLSOffer, *, preferred: DTLSRole, fingerprint: Fingerprint) -> DTLSAnswer:
    """The SRS's answer to ``offer``: its role, its fingerprint, a fresh tls-id if one was offered."""
    role = choose_role(offer.setup, preferred)
    setup = role.value if role is not None else "holdconn"
    tls_id = new_tls_id() if offer.tls_id is not None else None
    return DTLSAnswer(role, setup, fingerprint, tls_id)


def association_identity(offer: DTLSOffer, preferred: DTLSRole) -> bytes:
    """Equal for two offers of a stream that keep its DTLS association (RFC 8842 §5): the same
    certificate fingerprints, the same tls-id, and an a=setup that leaves the SRS its role
    (``actpass`` then ``passive`` keeps an active SRS active: no new handshake)."""
    role = choose_role(offer.setup, preferred)
    parts = sorted(str(f) for f in offer.fingerprints)
    parts += [f"tls-id {offer.tls_id}", f"role {role.value if role else 'holdconn'}"]
    return "\n".join(parts).encode()


def new_tls_id() -> str:
    return secrets.token_urlsafe(_TLS_ID_BYTES).replace("-", "+").replace("_", "/")


def answer_attributes(answer: DTLSAnswer) -> list[tuple[str, str | None]]:
    """The a= lines the answer's m-line carries for DTLS-SRTP."""
    attributes: list[tuple[str, str | None]] = [
        ("setup", answer.setup),
        ("fingerprint", str(answer.fingerprint)),
    ]
    if answer.tls_id is not None:
        attributes.append(("tls-id", answer.tls_id))
    return attributes
