"""MIME bodies (RFC 2046 multipart, as SIPREC uses it in RFC 7866 §9), parsed as pure functions.

Real SRCs send sloppy MIME: the metadata part may come first, part headers may lack the space
after the colon, parts may use LF instead of CRLF, whitespace may precede ``<?xml``, and the
closing delimiter may be missing.  The parser accepts all of that; it raises
:class:`MultipartError` only when no part can be found at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from siprecd.errors import BadRequest
from siprecd.sip.headers import Headers


class MultipartError(BadRequest):
    """The body claims to be multipart but cannot be split; the reason says why."""


@dataclass(frozen=True)
class BodyPart:
    headers: Headers
    body: bytes

    @property
    def content_type(self) -> str:
        """Lower-case ``type/subtype`` without parameters (``text/plain`` when absent)."""
        value = self.headers.get("Content-Type")
        if value is None:
            return "text/plain"
        return value.split(";", 1)[0].strip().lower()

    @property
    def disposition(self) -> str | None:
        value = self.headers.get("Content-Disposition")
        return value.split(";", 1)[0].strip().lower() if value else None


def content_type_param(content_type: str, name: str) -> str | None:
    """A parameter of a Content-Type value, unquoted (``boundary`` for example)."""
    for item in content_type.split(";")[1:]:
        key, sep, value = item.partition("=")
        if sep and key.strip().lower() == name.lower():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def parse_body(content_type: str | None, body: bytes) -> list[BodyPart]:
    """Every part of a body: a multipart body's parts, or the body itself as a single part."""
    if content_type is None:
        return [BodyPart(Headers(), body)] if body else []
    if content_type.split(";", 1)[0].strip().lower().startswith("multipart/"):
        return parse_multipart(content_type, body)
    return [BodyPart(Headers([("Content-Type", content_type)]), body)]


def parse_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    boundary = content_type_param(content_type, "boundary")
    if not boundary:
        raise MultipartError(f"multipart Content-Type {content_type!r} has no boundary parameter")
    if len(boundary) > 200:
        raise MultipartError("multipart boundary is longer than 200 characters")
    # Header values were decoded from bytes with surrogateescape: encode the same way, so that
    # any boundary (even a non-ASCII one) maps back to the bytes that were on the wire.
    wire = boundary.encode("utf-8", "surrogateescape")
    delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(wire) + rb"(--)?[ \t]*(?:\r?\n|$)")
    matches = list(delimiter.finditer(body))
    if not matches:
        raise MultipartError(f"multipart body has no delimiter line '--{boundary}'")
    parts: list[BodyPart] = []
    for index, match in enumerate(matches):
        if match.group(1):  # close-delimiter: the epilogue follows
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(body)
        parts.append(_parse_part(body[match.end():end], len(parts) + 1))
    if not parts:
        raise MultipartError("multipart body has no parts")
    return parts


def _parse_part(data: bytes, number: int) -> BodyPart:
    fields: list[tuple[str, str]] = []
    offset = 0
    # Headers end at the first empty line; a part may have none (then it starts empty line).
    while True:
        newline = data.find(b"\n", offset)
        line_end = len(data) if newline < 0 else newline
        line = data[offset:line_end].rstrip(b"\r")
        offset = len(data) if newline < 0 else newline + 1
        if not line:
            break
        text = line.decode("utf-8", "replace")
        if text[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + text.strip())  # a folded continuation line
            continue
        name, colon, value = text.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise MultipartError(f"part {number}: header line {text[:60]!r} has no name or ':'")
        fields.append((name.strip(), value.strip()))
        if offset >= len(data):
            break
    return BodyPart(Headers(fields), data[offset:])
