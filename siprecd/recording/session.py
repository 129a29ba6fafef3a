"""One recording session (RFC 7866 RS): streams, metadata history, and its session.json view."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from siprecd import __version__
from siprecd.media.ports import PortPair
from siprecd.media.receiver import StreamMedia
from siprecd.metadata import MetadataState, senders_by_label, summarize
from siprecd.sdp import StreamChoice


class SessionState(enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"


def iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class RecordedStream:
    """One offered m-line, identified across re-offers by its label (or position if unlabelled)."""

    key: str
    choice: StreamChoice
    ports: PortPair | None = None
    media: StreamMedia | None = None
    ended: bool = False

    @property
    def recorder(self) -> Any:
        return self.media.recorder if self.media is not None else None

    def _security(self) -> dict[str, Any]:
        c = self.choice
        out: dict[str, Any] = c.security.to_json() if c.security is not None else {"method": None, "suite": None}
        dtls = self.media.dtls if self.media is not None else None
        if dtls is not None and out["method"] == "dtls-srtp":
            # The suite is the handshake's, known only once it is done.
            state = dtls.to_json()
            out["suite"] = state["suite"]
            out["dtls"] = state
            rtcp = self.media.dtls_rtcp if self.media is not None else None
            if rtcp is not None:
                out["dtls_rtcp"] = rtcp.to_json()
        return out

    def to_json(self, senders: dict[str, list[str]]) -> dict[str, Any]:
        c = self.choice
        recorder = self.recorder
        return {
            "label": c.label,
            "index": c.index,
            "media_type": c.media_type,
            "recorded": c.accepted,
            "reason": c.reason,
            "codec": c.codec,
            "clock_rate": c.clock_rate,
            "channels": c.channels,
            "payload_type": int(c.payload_type) if c.payload_type is not None else None,
            "telephone_event_payload_type": (
                int(c.telephone_event_pt) if c.telephone_event_pt is not None else None
            ),
            "direction": c.direction,
            "offered_direction": c.offered_direction,
            # method and suite (and non-secret facts), never key material.
            "stream_security": self._security(),
            "on_hold": c.on_hold,
            "rtp_port": self.ports.rtp_port if self.ports else None,
            "rtcp_port": self.ports.rtcp_port if self.ports else None,
            "sending_participants": senders.get(c.label or "", []),
            "file": recorder.file if recorder is not None else None,
            "recording": recorder.to_json() if recorder is not None else None,
            "events": recorder.events if recorder is not None else [],
            "packets_received": recorder.counters.packets if recorder is not None else 0,
            "bytes_received": recorder.counters.bytes if recorder is not None else 0,
            "reception": self.media.to_json() if self.media is not None else None,
            "ended": self.ended,
        }


@dataclass
class MetadataVersion:
    index: int
    file: str
    received_at: str
    method: str
    content_type: str
    parsed: bool
    error: str | None = None


@dataclass
class RecordingSession:
    session_id: str
    call_id: str
    started_at: float
    src: dict[str, Any]
    sip: dict[str, Any]
    siprec: bool
    directory: str
    state: SessionState = SessionState.ACTIVE
    ended_at: float | None = None
    end_reason: str | None = None
    streams: list[RecordedStream] = field(default_factory=list)
    metadata: MetadataState = field(default_factory=MetadataState)
    metadata_versions: list[MetadataVersion] = field(default_factory=list)
    sdp_files: list[str] = field(default_factory=list)
    sdp_version: int = 0
    sdp_session_id: int = 0
    # The media layer's view of the mix, given the senders per label (None: no media layer).
    mix_view: Callable[[dict[str, list[str]]], Any] | None = field(default=None, repr=False)

    def live_streams(self) -> list[RecordedStream]:
        return [s for s in self.streams if not s.ended]

    def update_state(self) -> None:
        """Paused when no live stream can carry media (RFC 7866 §8.1: pause via inactive/hold)."""
        if self.state == SessionState.ENDED:
            return
        recorded = [s for s in self.live_streams() if s.choice.accepted]
        flowing = [s for s in recorded if s.choice.direction != "inactive" and not s.choice.on_hold]
        self.state = SessionState.ACTIVE if flowing or not recorded else SessionState.PAUSED

    def to_json(self) -> dict[str, Any]:
        summary = summarize(self.metadata)
        senders = senders_by_label(self.metadata.current) if self.metadata.current else {}
        return {
            "session_id": self.session_id,
            "call_id": self.call_id,
            "state": self.state.value,
            "started_at": iso_utc(self.started_at),
            "ended_at": iso_utc(self.ended_at) if self.ended_at is not None else None,
            "end_reason": self.end_reason,
            "siprec": self.siprec,
            "src": self.src,
            "sip": self.sip,
            "participants": summary.get("participants", []),
            "streams": [s.to_json(senders) for s in self.streams],
            "mix": self.mix_view(senders) if self.mix_view is not None else None,
            "metadata": {k: v for k, v in summary.items() if k != "participants"},
            "metadata_files": [v.file for v in self.metadata_versions],
            "metadata_versions": [
                {
                    "index": v.index,
                    "file": v.file,
                    "received_at": v.received_at,
                    "method": v.method,
                    "content_type": v.content_type,
                    "parsed": v.parsed,
                    "error": v.error,
                }
                for v in self.metadata_versions
            ],
            "sdp_files": self.sdp_files,
            "srs": {"software": "siprecd", "version": __version__},
        }
