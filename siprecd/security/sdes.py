"""SDES (RFC 4568): ``a=crypto`` lines parsed, judged and answered.

Pure functions over attribute values.  What a line may carry (§9.2):
``tag SUITE inline:KEY||SALT[|LIFETIME][|MKI:LENGTH][;inline:...] [SESSION-PARAM...]``.
A line that cannot be used is skipped with a reason, never an error for the whole offer: the
offer's other lines (or m-lines) may still be acceptable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from siprecd.security.suites import SUITES, Suite

__all__ = ["CryptoLine", "KeyParams", "SDESError", "answer_value", "parse_crypto", "redact_keys", "unusable"]

MAX_LIFETIME = 2**48  # RFC 3711 §9.2: an SRTP master key protects at most 2^48 packets
# inline:KEY||SALT in an a=crypto line (RFC 4568 §9.2): the base64 up to the lifetime/MKI/next key.
_CRYPTO_LINE = re.compile(rb"(?im)^a=crypto:[^\r\n]*")
_KEY_VALUE = re.compile(rb"(?i)(inline:)[A-Za-z0-9+/=]+")
_FLAGS = frozenset({"UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"})


class SDESError(ValueError):
    """An ``a=crypto`` value that does not follow RFC 4568's grammar; says what and where."""


@dataclass(frozen=True, slots=True)
class KeyParams:
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    lifetime: int | None  # packets; None: not given (the suite's maximum)
    mki: bytes  # the Master Key Identifier as it appears in packets; b"" when none


@dataclass(frozen=True, slots=True)
class CryptoLine:
    tag: int
    suite: str
    keys: tuple[KeyParams, ...]
    params: tuple[str, ...]  # session parameters as offered

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(p for p in self.params if p in _FLAGS)

    def fingerprint(self) -> bytes:
        """Identifies the offerer's keying: equal for an unchanged line in a re-offer."""
        digest = hashlib.sha256(f"{self.tag} {self.suite} {' '.join(self.params)}".encode())
        for k in self.keys:
            digest.update(k.key + k.salt + k.mki + str(k.lifetime).encode())
        return digest.digest()


def _lifetime(text: str, where: str) -> int:
    if text.startswith("2^"):
        exponent = text[2:]
        if not exponent.isdigit() or int(exponent) > 48:
            raise SDESError(f"{where}: lifetime {text!r} is not 2^n with n at most 48")
        return 2 ** int(exponent)
    if not text.isdigit() or not 0 < int(text) <= MAX_LIFETIME:
        raise SDESError(f"{where}: lifetime {text!r} is not a number of packets up to 2^48")
    return int(text)


def _mki(text: str, where: str) -> bytes:
    value, _, length = text.partition(":")
    if not value.isdigit() or not length.isdigit() or not 1 <= int(length) <= 128:
        raise SDESError(f"{where}: MKI {text!r} is not VALUE:LENGTH with a length of 1-128 bytes")
    try:
        return int(value).to_bytes(int(length), "big")
    except OverflowError:
        raise SDESError(f"{where}: MKI value {value} does not fit in {length} byte(s)") from None


def _key_param(text: str, suite: Suite | None, where: str) -> KeyParams:
    method, _, info = text.partition(":")
    if method.lower() != "inline" or not info:
        raise SDESError(f"{where}: key method must be 'inline:', got {method[:12]!r}")
    encoded, *rest = info.split("|")
    if len(rest) > 2:
        raise SDESError(f"{where}: too many '|' fields in the key parameters")
    try:
        material = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SDESError(f"{where}: key||salt is not valid base64") from None
    if suite is not None and len(material) != suite.inline_length:
        raise SDESError(
            f"{where}: key||salt is {len(material)} bytes, the suite needs {suite.inline_length}"
        )
    lifetime: int | None = None
    mki = b""
    for index, part in enumerate(rest):
        if ":" in part:
            mki = _mki(part, where)
        elif index == 0:
            lifetime = _lifetime(part, where)
        else:
            raise SDESError(f"{where}: {part!r} after the lifetime is not an MKI (VALUE:LENGTH)")
    split = suite.key_length if suite is not None else len(material)
    return KeyParams(material[:split], material[split:], lifetime, mki)


def parse_crypto(value: str) -> CryptoLine:
    """One ``a=crypto`` value (after ``crypto:``) into a :class:`CryptoLine`.

    Keys are checked against the suite's key||salt length when the suite is known; lines with
    unknown suites parse (with their raw key) so that :func:`unusable` can say why they are
    skipped.
    """
    fields = value.split()
    if len(fields) < 3:
        # The value itself is not quoted: it may hold a key.
        raise SDESError(f"a=crypto with {len(fields)} field(s) needs a tag, a suite and key parameters")
    tag_text, suite, keys_text, *params = fields
    if not tag_text.isdigit() or len(tag_text) > 9:
        raise SDESError(f"a=crypto tag {tag_text!r} is not 1-9 digits")
    known = SUITES.get(suite)
    where = f"a=crypto:{tag_text} {suite}"
    keys = tuple(
        _key_param(text, known, f"{where} key {n + 1}") for n, text in enumerate(keys_text.split(";"))
    )
    if len(keys) > 1:
        mkis = [k.mki for k in keys]
        if not all(mkis) or len({len(m) for m in mkis}) != 1 or len(set(mkis)) != len(mkis):
            raise SDESError(f"{where}: several keys need distinct MKIs of one length")
    return CryptoLine(int(tag_text), suite, keys, tuple(params))


def unusable(line: CryptoLine, *, allowed: Iterable[str], allow_unencrypted: bool) -> str | None:
    """Why the SRS cannot take this line (None: it can)."""
    suite = SUITES.get(line.suite)
    if suite is None:
        return f"suite {line.suite} is not supported"
    if line.suite not in allowed:
        return f"suite {line.suite} is not allowed by [security] suites"
    for param in line.params:
        name, _, value = param.partition("=")
        if name == "KDR":
            if value != "0":
                return f"KDR={value} (key derivation rate other than 0) is not supported"
        elif name in ("FEC_ORDER", "FEC_KEY"):
            return f"{name} (SRTP with FEC) is not supported"
        elif name == "UNAUTHENTICATED_SRTP":
            return "UNAUTHENTICATED_SRTP is refused (unauthenticated media could be forged)"
        elif name in ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP"):
            if not allow_unencrypted:
                return f"{name} is not allowed ([security] allow_unencrypted = false)"
            if suite.aead:
                return f"{name} with {line.suite} is not supported"
        elif name == "WSH":
            if not value.isdigit() or int(value) < 64:
                return f"WSH={value} is not a window size of at least 64"
        else:
            return f"session parameter {param!r} is not supported"
    if suite.aead and any(k.mki for k in line.keys):
        return f"MKI with {line.suite} is not supported"
    return None


def answer_value(line: CryptoLine, key_salt: bytes) -> str:
    """The answer's ``a=crypto`` value: the chosen tag and suite with the SRS's own key.

    RFC 4568 §6.1: the answer carries the offer's tag; the UNENCRYPTED_* parameters must be
    echoed (both directions use them), the others describe the offerer's stream only.
    """
    echoed = [p for p in line.params if p in ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP")]
    text = f"{line.tag} {line.suite} inline:{base64.b64encode(key_salt).decode()}"
    return " ".join([text, *echoed])


def redact_keys(sdp: bytes) -> bytes:
    """The SDP with every ``a=crypto`` key replaced by ``REDACTED``, for the files kept on disk:
    keys never leave the process (the SRS's own are in its answers on the wire only)."""
    return _CRYPTO_LINE.sub(lambda line: _KEY_VALUE.sub(rb"\1REDACTED", line.group(0)), sdp)
