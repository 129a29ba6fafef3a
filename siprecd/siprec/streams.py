"""The streams of one recording session across offers: each label keeps its port pair.

A negotiation is a transaction: :meth:`StreamTable.assign` allocates what a new offer needs,
then either :meth:`commit` (the answer was sent: release what the offer dropped) or
:meth:`abort` (the offer failed: release what was allocated, keep the session as it was).
"""

from __future__ import annotations

from collections.abc import Callable

from siprecd.media.ports import PortAllocator
from siprecd.media.receiver import StreamMedia
from siprecd.recording.session import RecordedStream
from siprecd.sdp import StreamChoice


def stream_key(choice: StreamChoice) -> str:
    # Labels are the SRC's stream identity (RFC 7866 §8.1.1); unlabelled m-lines keep position.
    return f"label:{choice.label}" if choice.label is not None else f"index:{choice.index}"


class StreamTable:
    def __init__(
        self,
        ports: PortAllocator,
        new_media: Callable[[], StreamMedia],
        finish: Callable[[RecordedStream], None] = lambda stream: None,
    ) -> None:
        self.ports = ports
        self._new_media = new_media
        self._finish = finish  # called for every stream whose ports are released
        self.current: list[RecordedStream] = []  # one per m-line of the last answer, in order
        self.ended: list[RecordedStream] = []  # streams earlier answers had and later ones dropped
        self._pending: list[RecordedStream] | None = None
        self._allocated: list[RecordedStream] = []

    @property
    def pending(self) -> list[RecordedStream]:
        """The streams of the offer being answered (after assign, before commit)."""
        assert self._pending is not None
        return self._pending

    @property
    def all(self) -> list[RecordedStream]:
        return self.current + self.ended

    def assign(self, plan: list[StreamChoice]) -> list[int | None]:
        """Ports for a new offer: a live label keeps its pair, a new one gets a fresh pair."""
        live = {s.key: s for s in self.current if s.ports is not None}
        pending: list[RecordedStream] = []
        ports: list[int | None] = []
        seen: dict[str, int] = {}
        for choice in plan:
            key = stream_key(choice)
            # A label used twice in one offer (against RFC 4574, but SRCs do it): the second
            # use is its own stream, so that every re-offer finds each pair where it was.
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key = f"{key}#{seen[key]}"
            stream = live.pop(key, None) if choice.accepted else None
            if stream is None:
                stream = RecordedStream(key=key, choice=choice)
                if choice.accepted:
                    stream.media = media = self._new_media()
                    stream.ports = self.ports.allocate(media.rtp, media.rtcp)
                    self._allocated.append(stream)
            pending.append(stream)
            ports.append(stream.ports.rtp_port if stream.ports else None)
        self._pending = pending
        return ports

    def settle(self, choices: list[StreamChoice]) -> None:
        """Record what the answer finally says about each m-line."""
        assert self._pending is not None
        for stream, choice in zip(self._pending, choices, strict=True):
            stream.choice = choice

    def commit(self) -> None:
        assert self._pending is not None
        kept = {id(s) for s in self._pending}
        for stream in self.current:
            if id(stream) not in kept and stream.ports is not None:
                self._release(stream)
                self.ended.append(stream)
        self.current = self._pending
        self._pending = None
        self._allocated = []

    def abort(self) -> None:
        for stream in self._allocated:
            if stream.ports is not None:
                self.ports.release(stream.ports)
                stream.ports = None
        self._pending = None
        self._allocated = []

    def release_all(self) -> None:
        self.abort()
        for stream in self.current:
            if stream.ports is not None:
                self._release(stream)

    def _release(self, stream: RecordedStream) -> None:
        assert stream.ports is not None
        try:
            self._finish(stream)
        finally:
            self.ports.release(stream.ports)
            stream.ended = True
