"""SRTP state carried beyond the process: what a stream's agreement becomes in the state store,
and the agreement rebuilt from it after a restart or on a takeover.

``SecurityPolicy.export`` turns a stream's agreement (and the key exchange's own keys) into a
JSON-able dict; the state layer seals it (it holds master keys) before it is stored.
``SecurityPolicy.rebuild`` gives the agreement back with its ``restored`` detail, its material
carrying the :class:`Carried` counters made here: the highest SRTP index per SSRC the SRS authenticated
(from the periodic positions, plain: sequence numbers and ROCs are on the wire anyway), the
SRS's own SSRC and the last SRTCP index it used for its receiver reports.

Why the counters: after a restart the SRC's ROC may be above 0 (a call longer than ~21 minutes
at 50 packets/s), and a fresh libsrtp context would take ROC 0 and fail every packet; the SRC's
SRTCP replay list has seen the SRS's report indices, so reports must continue above them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Carried", "SRTCP_INDEX_MARGIN", "b64", "carried_counters", "unb64"]

# Reports sent between the last positions tick and the crash are not in the store: the index
# continues this far above the stored one (31-bit space; a report every few seconds).
SRTCP_INDEX_MARGIN = 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class Carried:
    """Counters a context carried on starts from (all empty: a fresh start, nothing known)."""

    how: str  # "restart" | "replaces"
    received: dict[int, int] = field(default_factory=dict)  # SSRC -> highest SRTP index seen
    ssrc: int | None = None  # the SRS's own SSRC in its reports
    srtcp_last: int = 0  # the last SRTCP index the SRS used under that SSRC

    def srtcp_next(self) -> dict[int, int] | None:
        if self.ssrc is None:
            return None
        return {self.ssrc: self.srtcp_last + 1 + SRTCP_INDEX_MARGIN}

    def summary(self, suite: str | None) -> dict[str, Any]:
        """The non-secret facts for session.json's ``stream_security.restored``."""
        out: dict[str, Any] = {
            "how": self.how,
            "highest_index": {f"{ssrc:#010x}": index for ssrc, index in sorted(self.received.items())},
        }
        if suite is not None:
            out["roc"] = "carried"
            out["srtcp_index"] = (
                "new SSRC (the SRS's SSRC was not stored)" if self.ssrc is None
                else f"continues from {self.srtcp_last + 1 + SRTCP_INDEX_MARGIN}"
            )
        return out


def carried_counters(security: dict[str, Any], indices: dict[str, Any] | None, how: str) -> Carried:
    """The counters of one stream from its sealed state and its last positions entry."""
    indices = indices or {}
    received = {int(ssrc): int(index) for ssrc, index in (indices.get("received") or {}).items()}
    ssrc = security.get("ssrc")
    return Carried(
        how=how,
        received=received,
        ssrc=int(ssrc) if ssrc is not None else None,
        srtcp_last=int(indices.get("srtcp_last", 0)),
    )
