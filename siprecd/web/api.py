"""The JSON API under ``/api``: live sessions, server figures, finished recordings and their audio.

::

    GET /api/sessions                                    live sessions (summaries)
    GET /api/sessions/{id}                               one live session: to_json() + summary
    GET /api/server                                      version, uptime, counts, disk
    GET /api/recordings?from=&to=&participant=&call_id=&limit=&offset=
    GET /api/recordings/{id}                             its session.json (private part if readable)
    GET /api/recordings/{id}/streams/{label}/audio       a stream's file ("mix": the mix file);
                                                         ?segment=N for segment N of a resumed session
    GET /api/recordings/{id}/mix/audio                   the mix file

Every answer is JSON (``application/json``) except audio; errors are ``{"error": "..."}`` in
plain words with 400 (bad parameter, named), 403 (decryption disabled), 404, 405, 409 (still
recording), 501 (encrypted, and this server has no key store) or 500.  The audio files
themselves, clear or decrypted as the client reads them, are served by
:mod:`siprecd.web.audio`.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from siprecd import __version__
from siprecd.crypto.at_rest import AtRest
from siprecd.metadata import senders_by_label, summarize
from siprecd.recording.session import iso_utc
from siprecd.security.policy import security_summary
from siprecd.web.audio import serve_audio
from siprecd.web.catalog import (
    Entry,
    PrivateUnreadable,
    Query,
    RecordingCatalog,
    parse_time,
    read_private,
    valid_session_id,
)
from siprecd.web.errors import ApiError

if TYPE_CHECKING:
    from siprecd.recording.session import RecordingSession
    from siprecd.siprec.controller import Controller

log = Logger()

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
QUERY_PARAMETERS = ("from", "to", "participant", "call_id", "limit", "offset")


class ApiResource(Resource):
    isLeaf = True

    def __init__(
        self,
        controller: Controller,
        catalog: RecordingCatalog,
        at_rest: AtRest | None,
        clock: IReactorTime,
        *,
        decrypt: bool = True,
    ) -> None:
        super().__init__()
        self._controller = controller
        self._catalog = catalog
        self._at_rest = at_rest or AtRest(None)
        self._clock = clock
        self._decrypt = decrypt
        self._started = clock.seconds()
        # live session id -> (metadata version key, participants, senders by label)
        self._people: dict[str, tuple[Any, list[dict[str, Any]], dict[str, list[str]]]] = {}

    # --- dispatch ---------------------------------------------------------------------------

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        try:
            if request.method not in (b"GET", b"HEAD"):
                method = request.method.decode("ascii", "replace")
                raise ApiError(405, f"{method} is not allowed: the API is read-only (GET, HEAD)", allow="GET, HEAD")
            return self._route(request, _segments(request.postpath))
        except ApiError as error:
            for name, value in error.headers.items():
                request.setHeader(name.encode(), value.encode())
            return self._json(request, {"error": error.message}, error.code)
        except Exception:
            log.failure("API request {method} {uri}", method=request.method, uri=request.uri)
            return self._json(request, {"error": "internal error; the server log has the details"}, 500)

    def _route(self, request: Request, path: list[str]) -> bytes | int:
        match path:
            case []:
                return self._json(request, {"endpoints": self._endpoints(request)})
            case ["sessions"]:
                return self._json(request, {"sessions": self._live_sessions()})
            case ["sessions", session_id]:
                return self._json(request, self._live_session(session_id))
            case ["server"]:
                return self._json(request, self._server())
            case ["recordings"]:
                return self._json(request, self._recordings(request))
            case ["recordings", session_id]:
                return self._json(request, self._recording(request, session_id))
            case ["recordings", session_id, "streams", key, "audio"]:
                return self._audio(request, session_id, key, mix=False)
            case ["recordings", session_id, "mix", "audio"]:
                return self._audio(request, session_id, "mix", mix=True)
        raise ApiError(404, f"no such API endpoint: /{'/'.join(path)}")

    @staticmethod
    def _json(request: Request, body: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(data))
        return b"" if request.method == b"HEAD" else data

    def _endpoints(self, request: Request) -> list[str]:
        base = _base(request)
        return [
            f"{base}/sessions",
            f"{base}/sessions/{{id}}",
            f"{base}/server",
            f"{base}/recordings?from=&to=&participant=&call_id=&limit=&offset=",
            f"{base}/recordings/{{id}}",
            f"{base}/recordings/{{id}}/streams/{{label}}/audio",
            f"{base}/recordings/{{id}}/mix/audio",
        ]

    # --- live sessions and the server -------------------------------------------------------

    def _live_sessions(self) -> list[dict[str, Any]]:
        sessions = self._controller.sessions
        for gone in self._people.keys() - sessions.keys():
            del self._people[gone]
        out = []
        for session in sorted(sessions.values(), key=lambda s: s.started_at, reverse=True):
            try:
                out.append(self._summary(session))
            except Exception:
                log.failure("summarizing live session {session_id}", session_id=session.session_id)
        return out

    def _live_session(self, session_id: str) -> dict[str, Any]:
        session = self._controller.sessions.get(session_id)
        if session is None:
            finished = valid_session_id(session_id) and self._catalog.get(session_id) is not None
            hint = f"; its recording is at /api/recordings/{session_id}" if finished else ""
            raise ApiError(404, f"no live recording session {session_id}{hint}")
        document = session.to_json()
        summary = self._summary(session)
        return {
            **document,
            "duration_seconds": summary["duration_seconds"],
            "srtp": summary["srtp"],
            "summary": summary,
        }

    def _summary(self, session: RecordingSession) -> dict[str, Any]:
        """A live session's figures without its whole to_json(): the dashboard polls this every
        second for every call, and summarizing the metadata is most of to_json()'s cost, so
        the participants are kept until a new metadata version arrives."""
        current = session.metadata.current
        key = (len(session.metadata_versions), id(current))
        cached = self._people.get(session.session_id)
        if cached is None or cached[0] != key:
            people = summarize(current).get("participants", []) if current is not None else []
            senders = senders_by_label(current) if current is not None else {}
            cached = (key, [_person(p) for p in people], senders)
            self._people[session.session_id] = cached
        _, participants, senders = cached
        mix = session.mix_view(senders) if session.mix_view is not None else None
        streams = [s.to_json(senders) for s in session.streams]
        return {
            "session_id": session.session_id,
            "call_id": session.call_id,
            "state": session.state.value,
            "started_at": iso_utc(session.started_at),
            "duration_seconds": round(max(0.0, self._clock.seconds() - session.started_at), 3),
            "src": session.src,
            "participants": participants,
            "streams": [_stream_figures(s) for s in streams],
            "mix_file": mix.get("file") if isinstance(mix, dict) else None,
            "srtp": security_summary(streams),
        }

    def _server(self) -> dict[str, Any]:
        root = self._catalog.root
        try:
            stats = os.statvfs(root)
            free: int | None = stats.f_bavail * stats.f_frsize
        except OSError:
            free = None
        return {
            "version": __version__,
            "uptime_seconds": round(self._clock.seconds() - self._started, 3),
            "active_sessions": len(self._controller.sessions),
            "finished_sessions": self._controller.finished,
            "recording_directory": root,
            "disk_free_bytes": free,
            "encryption": self._at_rest.encrypted,
            "api_decrypts": self._keys() is not None,
        }

    # --- finished recordings ----------------------------------------------------------------

    def _recordings(self, request: Request) -> dict[str, Any]:
        query = _query(request.args)
        page, total, exact = self._catalog.query(query)
        base = _base(request)
        return {
            "recordings": [self._item(base, entry) for entry in page],
            "total": total,
            "total_exact": exact,
            "limit": query.limit,
            "offset": query.offset,
        }

    def _item(self, base: str, entry: Entry) -> dict[str, Any]:
        item = entry.summary()
        links = _links(base, entry)
        item["url"] = links["self"]
        for stream in item["streams"]:
            stream["audio_url"] = links["audio"].get(stream["key"]) if stream["file"] else None
        item["mix"] = {"file": entry.mix_file, "audio_url": links["mix_audio"]} if entry.mix_file else None
        return item

    def _finished(self, session_id: str) -> Entry:
        if not valid_session_id(session_id):
            raise ApiError(404, f"no recording {session_id!r}: not a session id")
        if session_id in self._controller.sessions:
            raise ApiError(
                409,
                f"recording session {session_id} is still active; its live state is at "
                f"/api/sessions/{session_id}",
            )
        entry = self._catalog.get(session_id)
        if entry is None:
            raise ApiError(404, f"no recording {session_id}")
        if not entry.finished:
            raise ApiError(409, f"recording session {session_id} is not finished (state {entry.state})")
        return entry

    def _recording(self, request: Request, session_id: str) -> dict[str, Any]:
        entry = self._finished(session_id)
        try:
            with open(os.path.join(entry.directory, "session.json"), "rb") as handle:
                document = json.loads(handle.read())
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            raise ApiError(500, f"session.json of {session_id} cannot be read: {error}") from None
        if "private_file" in document:
            keys = self._keys()
            if keys is None:
                reason = (
                    "decryption through the API is disabled"
                    if self._at_rest.encrypted
                    else "this server has no key store"
                )
                document["note"] = (
                    f"participants, SIP headers and metadata are encrypted in "
                    f"{document['private_file']} and not shown: {reason}"
                )
            else:
                try:
                    private = read_private(entry.directory, document, keys)
                except PrivateUnreadable as error:
                    document["note"] = f"the encrypted personal fields could not be read: {error}"
                else:
                    if private is not None:
                        document = {**private, "private_file": document["private_file"]}
        document["links"] = _links(_base(request), entry)
        return document

    def _keys(self) -> Any:
        return self._at_rest.keys if self._decrypt else None

    # --- audio ------------------------------------------------------------------------------

    def _audio(self, request: Request, session_id: str, key: str, *, mix: bool) -> bytes | int:
        entry = self._finished(session_id)
        name: str | None
        if mix:
            name, what = entry.mix_file, "the mix"
        else:
            stream = next((s for s in entry.streams if s.key == key), None)
            if stream is None and key == "mix":
                return self._audio(request, session_id, key, mix=True)
            if stream is None:
                known = ", ".join(s.key for s in entry.streams) or "none"
                raise ApiError(404, f"recording {session_id} has no stream {key!r} (streams: {known})")
            name, what = stream.file, f"stream {key!r}"
        if name is None:
            raise ApiError(404, f"{what} of recording {session_id} has no file")
        if b"segment" in request.args:  # ?segment=N: one file of a resumed session (1 = first)
            segments = entry.mix_segments if mix else stream.segments  # type: ignore[union-attr]
            number = request.args[b"segment"][0].decode("ascii", "replace")
            if not number.isdigit() or not 1 <= int(number) <= len(segments):
                raise ApiError(404, f"{what} of recording {session_id} has segments 1..{len(segments)}, not {number!r}")
            name = segments[int(number) - 1]
        return serve_audio(request, entry.directory, name, what, session_id, decrypt=self._decrypt, keys=self._keys())


# --- helpers ---------------------------------------------------------------------------------


def _segments(postpath: list[bytes]) -> list[str]:
    if postpath and postpath[-1] == b"":
        postpath = postpath[:-1]  # a trailing slash
    try:
        return [unquote_to_bytes(p).decode("utf-8") for p in postpath]
    except UnicodeDecodeError:
        raise ApiError(400, "the path is not valid UTF-8") from None


def _base(request: Request) -> str:
    return "/" + "/".join(p.decode("utf-8", "replace") for p in request.prepath) if request.prepath else ""


def _links(base: str, entry: Entry) -> dict[str, Any]:
    own = f"{base}/recordings/{quote(entry.session_id, safe='')}"
    audio: dict[str, str] = {}
    for stream in entry.streams:
        if stream.file and stream.key not in audio:
            audio[stream.key] = f"{own}/streams/{quote(stream.key, safe='')}/audio"
    return {"self": own, "audio": audio, "mix_audio": f"{own}/mix/audio" if entry.mix_file else None}


def _person(p: dict[str, Any]) -> dict[str, Any]:
    return {"id": p.get("id"), "name": p.get("name"), "aor": p.get("aor"), "numbers": p.get("numbers") or []}


def _stream_figures(s: dict[str, Any]) -> dict[str, Any]:
    timeline = (s.get("recording") or {}).get("timeline") or {}
    sources = (s.get("reception") or {}).get("sources") or []
    jitters = [src["jitter_ms"] for src in sources if src.get("jitter_ms") is not None]
    return {
        "label": s.get("label"),
        "index": s.get("index"),
        "codec": s.get("codec"),
        "recorded": s.get("recorded"),
        "direction": s.get("direction"),
        "on_hold": s.get("on_hold"),
        "ended": s.get("ended"),
        "packets": s.get("packets_received", 0),
        "bytes": s.get("bytes_received", 0),
        "lost": timeline.get("lost", 0),
        "reordered": timeline.get("reordered", 0),
        "jitter_ms": max(jitters) if jitters else None,
        "file": s.get("file"),
        "stream_security": s.get("stream_security"),
    }


def _query(args: dict[bytes, list[bytes]]) -> Query:
    values: dict[str, str] = {}
    for raw_name, raw_values in args.items():
        try:
            name = raw_name.decode("utf-8")
            decoded = [v.decode("utf-8") for v in raw_values]
        except UnicodeDecodeError:
            raise ApiError(400, "a query parameter is not valid UTF-8") from None
        if name not in QUERY_PARAMETERS:
            raise ApiError(400, f"unknown parameter {name!r}; known: {', '.join(QUERY_PARAMETERS)}")
        if len(decoded) != 1:
            raise ApiError(400, f"parameter {name} is given {len(decoded)} times")
        values[name] = decoded[0]
    start = _time_parameter(values, "from")
    end = _time_parameter(values, "to")
    if start is not None and end is not None and start > end:
        raise ApiError(400, "from is later than to")
    return Query(
        start=start,
        end=end,
        participant=_text_parameter(values, "participant"),
        call_id=_text_parameter(values, "call_id"),
        limit=_int_parameter(values, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_int_parameter(values, "offset", 0, 0, 10**9),
    )


def _time_parameter(values: dict[str, str], name: str) -> float | None:
    if name not in values:
        return None
    try:
        return parse_time(values[name])
    except ValueError:
        raise ApiError(
            400, f"{name}: {values[name]!r} is not a time (ISO 8601 such as 2024-05-01T12:00:00Z, or epoch seconds)"
        ) from None


def _text_parameter(values: dict[str, str], name: str) -> str | None:
    if name not in values:
        return None
    value = values[name].strip()
    if not value:
        raise ApiError(400, f"{name} is empty")
    if len(value) > 256:
        raise ApiError(400, f"{name} is longer than 256 characters")
    return value


def _int_parameter(values: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    if name not in values:
        return default
    text = values[name].strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{name}: {values[name]!r} is not a whole number from {low} to {high}")
    return int(text)
