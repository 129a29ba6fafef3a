"""Where a message came from, and how to answer it: the one value every transport produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StreamConnection(Protocol):
    """The part of a TCP/TLS connection protocol the SIP stack writes to."""

    @property
    def open(self) -> bool: ...

    def write_message(self, data: bytes) -> None: ...


@dataclass(frozen=True, eq=False)
class Source:
    transport: str  # "UDP", "TCP" or "TLS"
    host: str
    port: int
    connection: StreamConnection | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"

    @property
    def secure(self) -> bool:
        return self.transport == "TLS"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"
