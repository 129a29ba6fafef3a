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
from siprecd.security.carried import Carried, b64, unb64
from siprecd.security.sdes import CryptoLine, KeyParams, SDESError, answer_value, parse_crypto, unusable
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

    def export_keys(self, negotiated: Negotiated, media: StreamMedia) -> dict[str, Any] | None:
        """The method's keys of a stream as JSON (sealed by the caller), None: nothing to carry."""

    def restore_material(self, keys: dict[str, Any], carried: Carried) -> Any:
        """The ``material`` of an agreement carried on from :meth:`export_keys`'s dict."""


@dataclass(frozen=True)
class _SdesKeys:
    line: CryptoLine
    local: bytes = field(repr=False)  # the SRS's key||salt
    carried: Carried | None = None  # counters to start from (restart, takeover)


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
        received = keys.carried.received if keys.carried is not None else None
        contexts = [
            InboundSRTP(
                line.suite, k.key, k.salt, mki=k.mki, encrypt_rtp=encrypt_rtp, encrypt_rtcp=encrypt_rtcp,
                received=received,
            )
            for k in line.keys
        ]
        inbound = contexts[0] if len(contexts) == 1 else InboundKeyRing(contexts)
        local_key, local_salt = keys.local[: suite.key_length], keys.local[suite.key_length:]
        srtcp_next = carry_ssrc(media, keys.carried, suite.name)
        media.secure(
            inbound,
            OutboundSRTCP(line.suite, local_key, local_salt, encrypt_rtcp=encrypt_rtcp, srtcp_next=srtcp_next),
        )
        return True

    def export_keys(self, negotiated: Negotiated, media: StreamMedia) -> dict[str, Any] | None:
        keys: _SdesKeys = negotiated.material
        line = keys.line
        return {
            "line": {
                "tag": line.tag,
                "suite": line.suite,
                "params": list(line.params),
                "keys": [
                    {"key": b64(k.key), "salt": b64(k.salt), "lifetime": k.lifetime, "mki": b64(k.mki)}
                    for k in line.keys
                ],
            },
            "local": b64(keys.local),
        }

    def restore_material(self, keys: dict[str, Any], carried: Carried) -> Any:
        stored = keys["line"]
        line = CryptoLine(
            tag=int(stored["tag"]),
            suite=str(stored["suite"]),
            keys=tuple(
                KeyParams(unb64(k["key"]), unb64(k["salt"]), k["lifetime"], unb64(k["mki"])) for k in stored["keys"]
            ),
            params=tuple(stored["params"]),
        )
        return _SdesKeys(line, unb64(keys["local"]), carried)


def carry_ssrc(media: StreamMedia, carried: Carried | None, suite: str) -> dict[int, int] | None:
    """A context carried on keeps the SRS's SSRC, its SRTCP index continuing above what the SRC
    has seen (RFC 3711 §3.3.2), for every suite (the AEAD ones on the GCM transform)."""
    if carried is None or carried.ssrc is None:
        return None
    media.ssrc = carried.ssrc
    return carried.srtcp_next()


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
        # (method, suite, how, outcome) -> agreements carried on after a restart or takeover
        self.restored: Counter[tuple[str, str, str, str]] = Counter()

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
        carried = getattr(negotiated.material, "carried", None)
        if carried is not None:
            self._carried_on(negotiated, carried, media)

    # --- carried beyond the process (the state store) ---------------------------------------

    def export(self, media: StreamMedia) -> dict[str, Any] | None:
        """What rebuilds the stream's contexts elsewhere or later (secret: the caller seals it)."""
        negotiated = media.negotiated
        if negotiated is None:
            return None
        export_keys = getattr(self.methods.get(negotiated.method), "export_keys", None)
        if export_keys is None:
            return {"method": negotiated.method, "incomplete": "this key exchange cannot be carried on"}
        keys = export_keys(negotiated, media)
        if keys is None:
            # Secured, but no keys yet (a DTLS handshake still running): stored as such, so a
            # restart refuses to carry the stream on rather than record it as plain RTP.
            return {"method": negotiated.method, "incomplete": "no SRTP keys yet (key exchange not complete)"}
        return {
            "method": negotiated.method,
            "suite": negotiated.suite or keys.get("suite"),  # DTLS: the handshake's
            "attributes": [list(a) for a in negotiated.attributes],
            "details": [[k, v] for k, v in negotiated.details if k != "restored"],
            "identity": negotiated.identity.hex(),
            "ssrc": media.ssrc,
            "keys": keys,
        }

    def rebuild(self, state: dict[str, Any], carried: Carried) -> Negotiated:
        """The agreement again from :meth:`export`'s dict, ``restored`` in its details.

        Raises ValueError naming what is wrong (an unknown method, a damaged state)."""
        name = state.get("method")
        if "incomplete" in state:
            raise ValueError(f"SRTP of method {name!r} cannot be carried on: {state['incomplete']}")
        method = self.methods.get(str(name))
        if method is None or not hasattr(method, "restore_material"):
            raise ValueError(f"SRTP state of method {name!r}: this build cannot restore it")
        suite = state.get("suite")
        try:
            material = method.restore_material(state["keys"], carried)
            return Negotiated(
                method=str(name),
                suite=suite,
                attributes=tuple((str(a), v) for a, v in state["attributes"]),
                details=tuple((str(k), v) for k, v in state["details"]) + (("restored", carried.summary(suite)),),
                identity=bytes.fromhex(state["identity"]),
                material=material,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"SRTP state of method {name!r} is damaged ({type(error).__name__}: {error})") from None

    def restore(self, state: dict[str, Any], carried: Carried, media: StreamMedia) -> Negotiated:
        """Carry a stream's agreement on: contexts rebuilt from the state (see :meth:`activate`)."""
        negotiated = self.rebuild(state, carried)
        self.activate(negotiated, media)
        return negotiated

    def _carried_on(self, negotiated: Negotiated, carried: Carried, media: StreamMedia) -> None:
        """An agreement from the state store is active again: counted."""
        self.restored[negotiated.method, negotiated.suite or "pending", carried.how, "carried"] += 1


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
