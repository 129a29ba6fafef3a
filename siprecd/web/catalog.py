"""The index of finished recordings the JSON API searches: ``<root>/YYYY/MM/DD/<id>/session.json``.

Nothing is kept on disk: every query lists the day directories it needs, newest first, and
reads a session.json only when its (mtime, size) changed since it was last parsed.  A parsed
file is reduced to what listing and filtering need (:class:`Entry`), so thousands of sessions
cost little memory, and a repeated query costs the day listings plus one ``stat`` per session
it examines.  An unfiltered query stops parsing once its page is full and counts the rest from
the listings: entries known to be ended as they are (an ended session.json is final), unknown
ones as finished unless the active index lists them, in which case the total is flagged as not
exact.  :meth:`RecordingCatalog.warm` parses everything in the background (one session per
step) so totals become exact and filtered queries find the cache ready.  A session is found by
id through an index, else with one ``stat`` per day directory, newest first.

A session.json that cannot be read or does not look like one is skipped and logged once per
version of the file; it never fails a query.  With ``encrypt_metadata`` the participants are
only in ``session-private.json.enc``: given the key store, the catalog decrypts it (once per
version) so participant filters still work; without it those sessions have no participants.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from twisted.logger import Logger

from siprecd.crypto.container import KeyProvider
from siprecd.crypto.files import decrypt_stream
from siprecd.metadata.summary import numbers_in
from siprecd.recording.files import active_index_names

log = Logger()

ENDED = "ended"
SESSION_FILE = "session.json"
# Session ids are uuid4 strings; anything that could walk out of the tree is refused.
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NUMBER_QUERY = re.compile(r"^[+\d\s().-]*\d[+\d\s().-]*$")


def valid_session_id(session_id: str) -> bool:
    return bool(_SESSION_ID.match(session_id))


def safe_file_name(name: Any) -> bool:
    """A plain file name inside the session directory (session.json is trusted, but not blindly)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def parse_time(text: str) -> float:
    """ISO 8601 (``2024-05-01``, ``2024-05-01T12:00:00Z``, with an offset) or epoch seconds.

    A time without an offset is UTC.  A ``+hh:mm`` offset that a query string turned into a
    space is put back.  Raises ValueError.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty")
    try:
        moment = float(text) if re.fullmatch(r"\d+(\.\d+)?", text) else _iso(text)
        time.gmtime(moment)  # the day directories must be computable from it
    except (OverflowError, OSError) as error:
        raise ValueError(str(error)) from None
    return moment


def _iso(text: str) -> float:
    text = re.sub(r" (\d{2}(:?\d{2})?)$", r"+\1", text)
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _day_key(moment: float | None) -> str | None:
    return time.strftime("%Y%m%d", time.gmtime(moment)) if moment is not None else None


def _day_of(day_path: str) -> str:
    month_path, day = os.path.split(day_path)
    year_path, month = os.path.split(month_path)
    return os.path.basename(year_path) + month + day


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


@dataclass
class Stream:
    key: str  # the label, or "stream-<index>" for an unlabelled m-line: the audio URL's name
    label: str | None
    index: int | None
    codec: str | None
    file: str | None
    # Every file of the stream in order (a resumed session has one per segment).
    segments: list[str] = field(default_factory=list)


@dataclass
class Entry:
    """What the catalog keeps of one session.json version."""

    session_id: str
    directory: str
    stamp: tuple[int, int]  # (mtime_ns, size) of session.json when parsed
    state: str
    call_id: str | None = None
    started: float = 0.0
    started_at: str | None = None
    ended_at: str | None = None
    ended: float | None = None
    end_reason: str | None = None
    participants: list[dict[str, Any]] = field(default_factory=list)
    participants_encrypted: bool = False  # personal fields sealed and not readable here
    streams: list[Stream] = field(default_factory=list)
    mix_file: str | None = None
    mix_segments: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # lower-case: names, AoRs, From/To
    numbers: list[str] = field(default_factory=list)  # digits only

    @property
    def finished(self) -> bool:
        return self.state == ENDED

    def matches(self, query: Query) -> bool:
        if not self.finished:
            return False
        if query.start is not None and self.started < query.start:
            return False
        if query.end is not None and self.started >= query.end:
            return False
        if query.call_id is not None and self.call_id != query.call_id:
            return False
        if query.participant is not None:
            return self.has_participant(query.participant)
        return True

    def has_participant(self, wanted: str) -> bool:
        needle = wanted.strip().lower()
        if any(needle in text for text in self.texts):
            return True
        if _NUMBER_QUERY.match(needle):
            digits = _digits(needle)
            return any(digits in number for number in self.numbers)
        return False

    def summary(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "call_id": self.call_id,
            "state": self.state,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_seconds": (
                round(self.ended - self.started, 3) if self.ended is not None else None
            ),
            "end_reason": self.end_reason,
            "participants": self.participants,
            "participants_encrypted": self.participants_encrypted,
            "streams": [
                {"label": s.label, "key": s.key, "index": s.index, "codec": s.codec, "file": s.file,
                 "segments": s.segments}
                for s in self.streams
            ],
            "mix": {"file": self.mix_file, "segments": self.mix_segments},
        }


@dataclass(frozen=True)
class Query:
    start: float | None = None  # started_at >= start
    end: float | None = None  # started_at < end
    participant: str | None = None  # substring of a name, AoR, number, From or To
    call_id: str | None = None  # exact
    limit: int = 50
    offset: int = 0

    @property
    def filtered(self) -> bool:
        return self.participant is not None or self.call_id is not None


class MalformedSession(ValueError):
    pass


class PrivateUnreadable(Exception):
    """session-private.json.enc exists but does not decrypt (wrong key, tampered, truncated)."""


def read_private(directory: str, document: dict[str, Any], keys: KeyProvider) -> dict[str, Any] | None:
    """The full session document sealed beside a redacted session.json, or None if there is none.

    Raises PrivateUnreadable (plain words) when it cannot be decrypted or parsed.
    """
    name = document.get("private_file")
    if name is None:
        return None
    if not safe_file_name(name):
        raise PrivateUnreadable(f"private_file {name!r} is not a file name")
    plain = io.BytesIO()
    try:
        with open(os.path.join(directory, name), "rb") as handle:
            status = decrypt_stream(handle, plain, keys)
    except OSError as error:
        raise PrivateUnreadable(f"{name}: {error.strerror or error}") from None
    if not status.ok:
        raise PrivateUnreadable(f"{name}: {status.describe()}")
    try:
        private = json.loads(plain.getvalue())
    except ValueError as error:
        raise PrivateUnreadable(f"{name} is not JSON: {error}") from None
    if not isinstance(private, dict):
        raise PrivateUnreadable(f"{name} is not a JSON object")
    return private


class RecordingCatalog:
    def __init__(self, root: str, keys: KeyProvider | None = None, *, max_entries: int = 200_000) -> None:
        self.root = root
        self.keys = keys
        self.max_entries = max_entries
        # day directory -> session id -> entry (None: malformed at that stamp, logged once)
        self._days: dict[str, dict[str, Entry | _Bad]] = {}
        self._size = 0
        self._index: dict[str, str] = {}  # session id -> day directory

    # --- queries ----------------------------------------------------------------------------

    def query(self, query: Query) -> tuple[list[Entry], int, bool]:
        """(the page, total matching, whether that total is exact), newest first.

        An unfiltered query parses sessions only until its page is full; the rest are counted
        from the day listings (cached entries as they are, unknown ones as finished unless the
        active index lists them), so its total is exact only once the catalog has seen them.
        """
        wanted = query.offset + query.limit
        found: list[Entry] = []
        counted = 0
        exact = True
        edges = {_day_key(query.start), _day_key(query.end)} - {None}
        active: set[str] | None = None
        for day in self._days_newest_first(query.start, query.end):
            names = self._list(day)
            if not query.filtered and len(found) >= wanted:
                if active is None:
                    active = self._active()
                n, day_exact = self._count(day, names, query, edge=_day_of(day) in edges, active=active)
                counted += n
                exact &= day_exact
                continue
            matching = [e for e in self._entries(day, names) if e.matches(query)]
            matching.sort(key=lambda e: (e.started, e.session_id), reverse=True)
            found.extend(matching)
        self._trim()
        return found[query.offset : wanted], len(found) + counted, exact

    def warm(self) -> Iterator[None]:
        """Parse every session not yet known, one per step, newest day first: for
        ``twisted.internet.task.cooperate(catalog.warm())`` at start-up, so that the first
        queries find the catalog ready instead of parsing on the reactor's time."""
        for day in self._days_newest_first(None, None):
            for name in self._list(day):
                self._entry(day, name)
                yield None
        self._trim()

    def get(self, session_id: str) -> Entry | None:
        """The current entry of a session (finished or not), or None if it has no readable
        session.json."""
        if not valid_session_id(session_id):
            return None
        day = self._index.get(session_id)
        if day is None or not os.path.isfile(os.path.join(day, session_id, SESSION_FILE)):
            day = next(
                (d for d in self._days_newest_first(None, None)
                 if os.path.isfile(os.path.join(d, session_id, SESSION_FILE))),
                None,
            )
        if day is None:
            self._index.pop(session_id, None)
            return None
        return self._entry(day, session_id)

    # --- the tree ---------------------------------------------------------------------------

    def _days_newest_first(self, start: float | None, end: float | None) -> Iterator[str]:
        first, last = _day_key(start), _day_key(end)
        for year in self._numbered(self.root, 4):
            if (first and year < first[:4]) or (last and year > last[:4]):
                continue
            year_path = os.path.join(self.root, year)
            for month in self._numbered(year_path, 2):
                ym = year + month
                if (first and ym < first[:6]) or (last and ym > last[:6]):
                    continue
                month_path = os.path.join(year_path, month)
                for day in self._numbered(month_path, 2):
                    ymd = ym + day
                    if (first and ymd < first) or (last and ymd > last):
                        continue
                    yield os.path.join(month_path, day)

    @staticmethod
    def _numbered(path: str, width: int) -> list[str]:
        try:
            names = os.listdir(path)
        except OSError:
            return []
        return sorted((n for n in names if len(n) == width and n.isdigit()), reverse=True)

    def _list(self, day: str) -> list[str]:
        try:
            names = [n for n in os.listdir(day) if valid_session_id(n)]
        except OSError:
            names = []
        cached = self._days.get(day)
        if cached:
            for gone in cached.keys() - set(names):  # removed by retention or by hand
                del cached[gone]
                self._size -= 1
                if self._index.get(gone) == day:
                    del self._index[gone]
        return names

    def _entries(self, day: str, names: list[str]) -> Iterator[Entry]:
        for name in names:
            entry = self._entry(day, name)
            if entry is not None:
                yield entry

    def _count(self, day: str, names: list[str], query: Query, *, edge: bool, active: set[str]) -> tuple[int, bool]:
        """How many sessions of ``day`` match, and whether that is known for sure.

        Entries known to be finished are trusted (an ended session.json is final); others
        are re-checked (parsed only if they changed).  Sessions never seen are counted
        without being parsed, unless the day is at an edge of the time range.
        """
        cached = self._days.get(day, {})
        count, exact = 0, True
        for name in names:
            entry = cached.get(name)
            if entry is None and not edge:
                if name not in active:
                    count += 1
                    exact = False
                continue
            if not isinstance(entry, Entry) or not entry.finished:
                entry = self._entry(day, name)
            if entry is not None and entry.matches(query):
                count += 1
        return count, exact

    def _active(self) -> set[str]:
        # One index per process: with [service] workers, each worker has its own.
        active: set[str] = set()
        for name in active_index_names(self.root):
            try:
                active.update(os.listdir(os.path.join(self.root, name)))
            except OSError:
                continue
        return active

    def _entry(self, day: str, session_id: str) -> Entry | None:
        directory = os.path.join(day, session_id)
        path = os.path.join(directory, SESSION_FILE)
        try:
            info = os.stat(path)
        except OSError:
            return None
        stamp = (info.st_mtime_ns, info.st_size)
        cached_day = self._days.setdefault(day, {})
        cached = cached_day.get(session_id)
        if cached is not None and cached.stamp == stamp:
            return cached if isinstance(cached, Entry) else None
        try:
            entry: Entry | _Bad = self._parse(directory, session_id, stamp)
        except Exception as error:  # noqa: BLE001 - a bad file is skipped, never fatal
            log.warn(
                "skipping {path}: {error}", path=path, error=error if str(error) else type(error).__name__
            )
            entry = _Bad(stamp)
        if cached is None:
            self._size += 1
        cached_day[session_id] = entry
        self._index[session_id] = day
        return entry if isinstance(entry, Entry) else None

    def _trim(self) -> None:
        """Forget the oldest days when the cache holds more than ``max_entries`` sessions."""
        if self._size <= self.max_entries:
            return
        for day in sorted(self._days):
            removed = self._days.pop(day)
            self._size -= len(removed)
            for session_id in removed:
                if self._index.get(session_id) == day:
                    del self._index[session_id]
            if self._size <= self.max_entries:
                return

    # --- one session.json -------------------------------------------------------------------

    def _parse(self, directory: str, session_id: str, stamp: tuple[int, int]) -> Entry:
        with open(os.path.join(directory, SESSION_FILE), "rb") as handle:
            document = json.loads(handle.read())
        if not isinstance(document, dict):
            raise MalformedSession("not a JSON object")
        if document.get("session_id") != session_id:
            raise MalformedSession(
                f"its session_id {document.get('session_id')!r} is not its directory's name"
            )
        state = document.get("state")
        if not isinstance(state, str):
            raise MalformedSession("no state")
        started_at = document.get("started_at")
        if not isinstance(started_at, str):
            raise MalformedSession("no started_at")
        ended_at = document.get("ended_at")
        entry = Entry(
            session_id=session_id,
            directory=directory,
            stamp=stamp,
            state=state,
            call_id=_text(document.get("call_id")),
            started=_iso(started_at),
            started_at=started_at,
            ended_at=ended_at if isinstance(ended_at, str) else None,
            ended=_iso(ended_at) if isinstance(ended_at, str) else None,
            end_reason=_text(document.get("end_reason")),
        )
        entry.streams = [_stream(s, n) for n, s in enumerate(_list(document.get("streams")))]
        mix = document.get("mix")
        if isinstance(mix, dict) and safe_file_name(mix.get("file")):
            entry.mix_file = mix["file"]
            entry.mix_segments = _segments(mix, entry.mix_file)
        personal = document
        if "private_file" in document:
            entry.participants_encrypted = True
            if self.keys is not None:
                try:
                    private = read_private(directory, document, self.keys)
                except PrivateUnreadable as error:
                    log.warn("participants of {session_id} are unreadable: {error}", session_id=session_id, error=error)
                else:
                    if private is not None:
                        personal, entry.participants_encrypted = private, False
        self._people(entry, personal)
        return entry

    @staticmethod
    def _people(entry: Entry, document: dict[str, Any]) -> None:
        texts: list[str] = []
        numbers: list[str] = []
        for p in _list(document.get("participants")):
            if not isinstance(p, dict):
                continue
            aors = [a for a in _list(p.get("aors")) if isinstance(a, str)]
            aor = _text(p.get("aor"))
            if aor and aor not in aors:
                aors.insert(0, aor)
            own = [n for n in _list(p.get("numbers")) if isinstance(n, str)]
            name = _text(p.get("name"))
            entry.participants.append(
                {"id": _text(p.get("id")), "name": name, "aor": aor, "numbers": own}
            )
            texts.extend(t.lower() for t in (name, *aors, *own) if t)
            numbers.extend(_digits(n) for t in (*aors, *own) for n in numbers_in(t))
        sip = document.get("sip")
        if isinstance(sip, dict):
            for header in ("from", "to"):
                value = sip.get(header)
                if isinstance(value, str):
                    texts.append(value.lower())
                    numbers.extend(_digits(n) for n in numbers_in(value))
        entry.texts = texts
        entry.numbers = [n for n in numbers if n]


@dataclass
class _Bad:
    """A session.json version that could not be used (already logged)."""

    stamp: tuple[int, int]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _stream(raw: Any, position: int) -> Stream:
    if not isinstance(raw, dict):
        raise MalformedSession("a stream is not a JSON object")
    label = _text(raw.get("label"))
    index = raw.get("index") if isinstance(raw.get("index"), int) else position
    file = raw.get("file") if safe_file_name(raw.get("file")) else None
    return Stream(
        key=label if label else f"stream-{index}",
        label=label,
        index=index,
        codec=_text(raw.get("codec")),
        file=file,
        segments=_segments(raw, file),
    )


def _segments(raw: dict[str, Any], file: str | None) -> list[str]:
    """The segment files session.json lists (safe names only); before segments: the file."""
    listed = [name for name in _list(raw.get("segments")) if safe_file_name(name)]
    return listed or ([file] if file else [])
