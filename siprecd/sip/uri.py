"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed and serialized as pure functions.

URIs of other schemes are kept as :class:`AbsoluteURI` so that a request addressed to one can be
answered 416 by the UAS core instead of failing to parse.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from siprecd.errors import BadRequest

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# hostname / IPv4 / [IPv6] with an optional port; host characters per RFC 3261 §25.1.
_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?$")
# RFC 3261 unreserved / escaped / user-unreserved characters of the userinfo part.
_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PARAM_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})*$")


class URIError(BadRequest):
    """A URI that cannot be parsed; the reason names the URI."""


@dataclass(frozen=True)
class SipURI:
    scheme: str  # "sip" or "sips"
    host: str  # IPv6 references keep their brackets
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str | None = None

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value if value is not None else ""
        return None

    def has_param(self, name: str) -> bool:
        return any(key.lower() == name.lower() for key, _ in self.params)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.upper() if value else None

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for key, value in self.params:
            out.append(f";{key}" if value is None else f";{key}={value}")
        if self.headers:
            out.append("?" + self.headers)
        return "".join(out)


@dataclass(frozen=True)
class TelURI:
    number: str
    params: tuple[tuple[str, str | None], ...] = ()
    scheme: str = field(default="tel")

    def __str__(self) -> str:
        out = ["tel:", self.number]
        for key, value in self.params:
            out.append(f";{key}" if value is None else f";{key}={value}")
        return "".join(out)


@dataclass(frozen=True)
class AbsoluteURI:
    """A URI of a scheme this server does not interpret (RFC 3261 absoluteURI)."""

    scheme: str
    text: str

    def __str__(self) -> str:
        return self.text


URI = SipURI | TelURI | AbsoluteURI


def _split_params(text: str, where: str) -> tuple[tuple[str, str | None], ...]:
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        if not item:
            raise URIError(f"empty parameter in {where}")
        key, sep, value = item.partition("=")
        if not key or not _PARAM_CHARS.match(key) or (sep and not _PARAM_CHARS.match(value)):
            raise URIError(f"bad parameter {item!r} in {where}")
        params.append((key, value if sep else None))
    return tuple(params)


def parse_host(text: str, where: str) -> tuple[str, int | None]:
    """Split ``host[:port]``; validates IPv6 references and the port range."""
    match = _HOSTPORT.match(text)
    if not match:
        raise URIError(f"bad host {text!r} in {where}")
    host, port_text = match.group(1), match.group(2)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise URIError(f"bad IPv6 reference {host!r} in {where}") from None
    elif host.startswith(".") or host.endswith("..") or ".." in host:
        raise URIError(f"bad host {text!r} in {where}")
    port = None
    if port_text is not None:
        port = int(port_text)
        if not 0 < port < 65536:
            raise URIError(f"port {port} out of range in {where}")
    return host, port


def parse_uri(text: str) -> URI:
    """Parse a URI; raises :class:`URIError` naming the URI on malformed SIP/SIPS/tel URIs."""
    match = _SCHEME.match(text)
    if not match:
        raise URIError(f"URI {text!r} has no scheme")
    scheme = match.group(1).lower()
    rest = text[match.end():]
    if any(ch in text for ch in " \t\r\n<>\"") :
        raise URIError(f"URI {text!r} contains whitespace or a delimiter")
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number or not re.match(r"^\+?[0-9A-Fa-f*#.\-()pw]+$", number):
            raise URIError(f"bad telephone number in {text!r}")
        return TelURI(number=number, params=_split_params(params, text) if params else ())
    return AbsoluteURI(scheme=scheme, text=text)


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    # The user part may hold ';', '?' and '/' (RFC 3261 §25.1) but never an unescaped '@', so
    # the first '@' ends the userinfo; only then do ';' and '?' start params and headers.
    user = password = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, colon, pw = userinfo.partition(":")
        if not user or not _USER.match(user):
            raise URIError(f"bad user part in {text!r}")
        if colon:
            if not re.match(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$", pw):
                raise URIError(f"bad password in {text!r}")
            password = pw
    rest, qmark, headers = rest.partition("?")
    hostport, semi, params = rest.partition(";")
    if not hostport:
        raise URIError(f"no host in {text!r}")
    host, port = parse_host(hostport, repr(text))
    return SipURI(
        scheme=scheme,
        host=host,
        user=user,
        password=password,
        port=port,
        params=_split_params(params, repr(text)) if semi else (),
        headers=headers if qmark else None,
    )
