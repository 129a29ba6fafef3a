"""The ``[security]`` policy: which m-lines may be recorded secured, with which method and suite.

Key exchange methods are objects in a registry (:func:`default_methods`), tried in the order of
``[security] key_exchange``.  SDES lives here; DTLS-SRTP adds itself by registering a
:class:`KeyExchange` named ``dtls-srtp`` (its ``activate`` starts the handshake and calls
``StreamMedia.secure`` once the keys are exported).  An offer that uses a method nobody
registered is refused with a reason saying so.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from siprecd.config import SecurityConfig
from siprecd.sdp.answer import SECURE_PROTOS
from siprecd.security.sdes import CryptoLine, SDESError, answer_value, parse_crypto, unusable
from siprecd.security.srtp import InboundKeyRing, InboundSRTP, OutboundSRTCP
from siprecd.security.suites import SUITES

if TYPE_CHECKING:
    from siprecd.media.receiver import StreamMedia
    from siprecd.sdp.model import MediaDescription, SessionDescription

__all__ = ["KeyExchange", "Negotiated", "SDES", "SecurityPolicy", "default_methods"]

# How an offer shows a method, for methods no KeyExchange is registered for (refused by name).
_DETECT: dict[str, Callable[[MediaDescription, SessionDescription], bool]] = {
    "sdes": lambda m, s: m.has_attribute("crypto"),
    "dtls-srtp": lambda m, s: m.has_attribute("fingerprint") or s.has_attribute("fingerprint")
    or m.proto.upper().startswith("UDP/TLS/"),
    "mikey": lambda m, s: m.has_attribute("key-mgmt") or s.has_attribute("key-mgmt"),
}
_NAMES = {"sdes": "SDES", "dtls-srtp": "DTLS-SRTP", "mikey": "MIKEY"}


@dataclass(frozen=True)
class Negotiated:
    """What a key exchange agreed for one m-line.  Secrets never appear in repr or to_json."""

    method: str  # "sdes" | "dtls-srtp"
    suite: str | None  # None until known (DTLS: after the handshake)
    attributes: tuple[tuple[str, str | None], ...] = field(repr=False)  # for the answer m-line
    details: tuple[tuple[str, Any], ...] = ()  # non-secret facts for session.json
    # Equal for an unchanged offer: a re-offer with the same key keeps the context.
    identity: bytes = field(default=b"", repr=False)
    material: Any = field(default=None, repr=False, compare=False)  # the method's own keys

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "suite": self.suite, **dict(self.details)}


class KeyExchange(Protocol):
    name: str

    def offered(self, m: MediaDescription, session: SessionDescription) -> bool:
        """Does this m-line offer the method at all?"""

    def negotiate(
        self, m: MediaDescription, session: SessionDescription, policy: SecurityPolicy
    ) -> Negotiated | str:
        """The agreement, or why the offered method cannot be used."""

    def activate(self, negotiated: Negotiated, media: StreamMedia) -> bool:
        """Install (or start making) the stream's contexts; True if new contexts were made."""


@dataclass(frozen=True)
class _SdesKeys:
    line: CryptoLine
    local: bytes = field(repr=False)  # the SRS's key||salt


class SDES:
    """RFC 4568: the SRS picks one offered line by its own preference, answers its own key."""

    name = "sdes"

    def offered(self, m: MediaDescription, session: SessionDescription) -> bool:
        return m.has_attribute("crypto")

    def negotiate(
        self, m: MediaDescription, session: SessionDescription, policy: SecurityPolicy
    ) -> Negotiated | str:
        lines: list[CryptoLine] = []
        skipped: list[str] = []
        for value in m.attribute_values("crypto"):
            try:
                lines.append(parse_crypto(value or ""))
            except SDESError as error:
                skipped.append(str(error))
        config = policy.config
        for suite in config.suites:
            for line in lines:
                if line.suite != suite:
                    continue
                why = unusable(line, allowed=config.suites, allow_unencrypted=config.allow_unencrypted)
                if why is None:
                    return self._agree(line, policy)
        for line in lines:
            why = unusable(line, allowed=config.suites, allow_unencrypted=config.allow_unencrypted)
            skipped.append(f"a=crypto:{line.tag} {line.suite}: {why}")
        offered = ", ".join(line.suite for line in lines) or "none readable"
        return f"no acceptable a=crypto line (offered: {offered}; " + "; ".join(skipped) + ")"

    def _agree(self, line: CryptoLine, policy: SecurityPolicy) -> Negotiated:
        local = policy.random_bytes(SUITES[line.suite].inline_length)
        keys = line.keys
        details: list[tuple[str, Any]] = [("tag", line.tag), ("keys_offered", len(keys))]
        if keys[0].mki:
            details.append(("mki_length", len(keys[0].mki)))
        if keys[0].lifetime is not None:
            details.append(("lifetime", keys[0].lifetime))
        details.extend((flag.lower(), True) for flag in sorted(line.flags))
        return Negotiated(
            method=self.name,
            suite=line.suite,
            attributes=(("crypto", answer_value(line, local)),),
            details=tuple(details),
            identity=line.fingerprint(),
            material=_SdesKeys(line, local),
        )

    def activate(self, negotiated: Negotiated, media: StreamMedia) -> bool:
        keys: _SdesKeys = negotiated.material
        line, suite = keys.line, SUITES[negotiated.suite or ""]
        flags = line.flags
        encrypt_rtp, encrypt_rtcp = "UNENCRYPTED_SRTP" not in flags, "UNENCRYPTED_SRTCP" not in flags
        contexts = [
            InboundSRTP(line.suite, k.key, k.salt, mki=k.mki, encrypt_rtp=encrypt_rtp, encrypt_rtcp=encrypt_rtcp)
            for k in line.keys
        ]
        inbound = contexts[0] if len(contexts) == 1 else InboundKeyRing(contexts)
        local_key, local_salt = keys.local[: suite.key_length], keys.local[suite.key_length:]
        media.secure(inbound, OutboundSRTCP(line.suite, local_key, local_salt, encrypt_rtcp=encrypt_rtcp))
        return True


def default_methods() -> dict[str, KeyExchange]:
    """The key exchanges this build implements (DTLS-SRTP adds its own entry here)."""
    return {"sdes": SDES()}


@dataclass(frozen=True)
class Decision:
    """For one m-line: refused (``refusal``), plain RTP (both None) or secured (``negotiated``)."""

    refusal: str | None = None
    negotiated: Negotiated | None = None


class SecurityPolicy:
    def __init__(
        self,
        config: SecurityConfig,
        methods: Mapping[str, KeyExchange] | None = None,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.config = config
        self.methods = dict(default_methods() if methods is None else methods)
        self.random_bytes = random_bytes
        self.sessions: Counter[tuple[str, str]] = Counter()  # (method, suite) -> contexts made

    def decide(self, m: MediaDescription, session: SessionDescription) -> Decision:
        config = self.config
        secured = m.proto.upper() in SECURE_PROTOS
        offered = [name for name, detect in _DETECT.items() if detect(m, session)]
        offered += [name for name, method in self.methods.items() if name not in offered and method.offered(m, session)]
        if config.srtp == "off":
            if secured:
                return Decision(f"secured media ({m.proto}) refused: [security] srtp = off")
            return Decision()  # a=crypto on RTP/AVP is a best-effort offer: plain is fine
        reasons: list[str] = []
        for name in offered:
            if name not in self.methods:
                reasons.append(f"{_NAMES.get(name, name)} key exchange is not supported yet")
            elif name not in config.key_exchange:
                reasons.append(f"{_NAMES.get(name, name)} is not allowed by [security] key_exchange")
        for name in config.key_exchange:
            method = self.methods.get(name)
            if method is None or name not in offered:
                continue
            result = method.negotiate(m, session, self)
            if isinstance(result, Negotiated):
                return Decision(negotiated=result)
            reasons.append(f"{_NAMES.get(name, name)}: {result}")
        if secured or config.srtp == "required":
            if not offered:
                why = (f"{m.proto} without any key exchange" if secured
                       else "plain RTP refused: [security] srtp = required")
                return Decision(why)
            return Decision("secured media not acceptable: " + "; ".join(reasons))
        return Decision()  # optional: an unusable best-effort offer on RTP/AVP records plain

    @staticmethod
    def carry_over(new: Negotiated | None, previous: Negotiated | None) -> Negotiated | None:
        """A re-offer with the same keying keeps the previous agreement (and the SRS's key)."""
        if new is not None and previous is not None and (new.method, new.identity) == (previous.method, previous.identity):
            return previous
        return new

    def activate(self, negotiated: Negotiated | None, media: StreamMedia) -> None:
        """Secure the stream as agreed; nothing changes if it is already under this agreement."""
        if negotiated is media.negotiated:
            return
        previous = media.negotiated
        if previous is not None and (negotiated is None or negotiated.method != previous.method):
            # A method with state of its own on the stream (DTLS's association) lets go of it.
            deactivate = getattr(self.methods.get(previous.method), "deactivate", None)
            if deactivate is not None:
                deactivate(media)
        media.negotiated = negotiated
        if negotiated is None:
            media.secure(None, None)
            return
        if self.methods[negotiated.method].activate(negotiated, media) and negotiated.suite:
            self.sessions[negotiated.method, negotiated.suite] += 1


def security_summary(streams: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]] | None:
    """A session's SRTP from its streams' session.json entries, for the API and dashboard:
    None for plain RTP, ``{"method", "suite"}`` when every secured stream agrees, else a list."""
    found: list[dict[str, Any]] = []
    for stream in streams:
        security = stream.get("stream_security") or {}
        entry = {"method": security.get("method"), "suite": security.get("suite")}
        if stream.get("recorded") and not stream.get("ended") and entry["method"] and entry not in found:
            found.append(entry)
    if not found:
        return None
    return found[0] if len(found) == 1 else found
