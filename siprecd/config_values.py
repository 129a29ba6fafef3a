"""Value parsers for the configuration schema (:data:`siprecd.config.SCHEMA`).

Each turns the text of one INI value into a typed value, or raises ``ValueError`` with a message
saying what is wrong with it (the loader adds the section and key).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

Parser = Callable[[str], Any]


def _bounded(convert: Callable[[str], Any], what: str, low: Any, high: Any) -> Parser:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def int_range(low: int, high: int) -> Parser:
    return _bounded(lambda text: int(text, 10), "a whole number", low, high)


def float_range(low: float, high: float) -> Parser:
    return _bounded(float, "a number", low, high)


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def optional_address(text: str) -> str | None:
    return address(text) if text.strip() else None


def string(text: str) -> str:
    return text.strip()


def optional_path(text: str) -> str | None:
    return text.strip() or None


def path(text: str) -> str:
    if not text.strip():
        raise ValueError("a path is required")
    return text.strip()


def name_list(text: str) -> tuple[str, ...]:
    names = tuple(item.strip() for item in text.replace(",", " ").split() if item.strip())
    if not names:
        raise ValueError("at least one name is required")
    return names


def choice(*options: str) -> Parser:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return value

    return parse


def codec_names(text: str) -> tuple[str, ...]:
    # Only codecs the SRS decodes may be chosen: anything else would be recorded as noise.
    from siprecd.media.codecs import SUPPORTED_CODECS
    names = name_list(text)
    known = {name.lower() for name in SUPPORTED_CODECS}
    unknown = [name for name in names if name.split("/")[0].lower() not in known]
    if unknown:
        raise ValueError(
            f"no decoder for {', '.join(unknown)} (supported: {', '.join(sorted(SUPPORTED_CODECS))})"
        )
    return names


def known_names(known: tuple[str, ...], what: str) -> Parser:
    def parse(text: str) -> tuple[str, ...]:
        names = name_list(text)
        if any(name not in known for name in names) or len(set(names)) != len(names):
            raise ValueError(f"{what} must be distinct names from {', '.join(known)}; got {', '.join(names)}")
        return names
    return parse


def algorithm(text: str) -> str:
    names = {"aes-256-gcm": "AES-256-GCM", "chacha20-poly1305": "ChaCha20-Poly1305"}
    try:
        return names[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not AES-256-GCM or ChaCha20-Poly1305") from None


def duration(text: str) -> float:
    from siprecd.crypto.rotation import parse_duration
    return parse_duration(text)


def optional_int_range(low: int, high: int) -> Parser:
    def parse(text: str) -> int | None:
        return int_range(low, high)(text) if text.strip() else None

    return parse
