"""The JSON API under ``/api``: live sessions, server figures, finished recordings and their audio.

::

    GET /api/sessions                                    live sessions (summaries)
    GET /api/sessions/{id}                               one live session: to_json() + summary
    GET /api/server                                      version, uptime, counts, disk
    GET /api/recordings?from=&to=&participant=&call_id=&limit=&offset=
    GET /api/recordings/{id}                             its session.json (private part if readable)
    GET /api/recordings/{id}/streams/{label}/audio       a stream's file ("mix": the mix file)
    GET /api/recordings/{id}/mix/audio                   the mix file

Every answer is JSON (``application/json``) except audio; errors are ``{"error": "..."}`` in
plain words with 400 (bad parameter, named), 403 (decryption disabled), 404, 405, 409 (still
recording), 501 (encrypted, and this server has no key store) or 500.  Clear files are served
by :class:`twisted.web.static.File` (ranges, HEAD, a producer).  Encrypted files are decrypted
as the client reads them, one chunk per ``resumeProducing``: plaintext never touches the disk
and the reactor never blocks for a whole file.  The WAV sizes the recorder could not patch are
set from the chunk lengths, read without decrypting; if a chunk then fails authentication the
connection is closed early, so the client sees a short body, never unauthenticated audio.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from twisted.internet.interfaces import IPullProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.static import File
from zope.interface import implementer

from siprecd import __version__
from siprecd.crypto.at_rest import SUFFIX, AtRest
from siprecd.crypto.container import MAGIC, OK, TAG_SIZE, TRUNCATED, ContainerReader
from siprecd.metadata import senders_by_label, summarize
from siprecd.recording.session import iso_utc
from siprecd.security.policy import security_summary
from siprecd.web.catalog import (
    Entry,
    PrivateUnreadable,
    Query,
    RecordingCatalog,
    parse_time,
    read_private,
    valid_session_id,
)

if TYPE_CHECKING:
    from siprecd.recording.session import RecordingSession
    from siprecd.siprec.controller import Controller

log = Logger()

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
QUERY_PARAMETERS = ("from", "to", "participant", "call_id", "limit", "offset")
CONTENT_TYPES = {".wav": "audio/wav", ".opus": "audio/ogg", ".ogg": "audio/ogg"}
WAV_HEAD_LIMIT = 1 << 20  # plaintext read to find an encrypted WAV's data chunk


class ApiError(Exception):
    def __init__(self, code: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers


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
        path = os.path.join(entry.directory, name)
        try:
            with open(path, "rb") as handle:
                encrypted = handle.read(len(MAGIC)) == MAGIC
        except FileNotFoundError:
            raise ApiError(404, f"the file {name} of {what} is missing") from None
        plain_name = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
        content_type = CONTENT_TYPES.get(os.path.splitext(plain_name)[1].lower(), "application/octet-stream")
        disposition = f'inline; filename="{session_id}-{_header_safe(plain_name)}"'
        if not encrypted:
            request.setHeader(b"content-disposition", disposition.encode())
            resource = File(path)
            resource.type, resource.encoding = content_type, None
            return resource.render_GET(request)  # type: ignore[no-any-return]
        if not self._decrypt:
            raise ApiError(403, f"{name} is encrypted and decryption through the API is disabled")
        keys = self._keys()
        if keys is None:
            raise ApiError(501, f"{name} is encrypted and this server has no key store to decrypt it")
        return _serve_encrypted(request, path, keys, content_type, disposition)


# --- encrypted audio ---------------------------------------------------------------------------


def _serve_encrypted(request: Request, path: str, keys: Any, content_type: str, disposition: str) -> bytes | int:
    handle = open(path, "rb")
    try:
        reader = ContainerReader(handle, keys)
        if not reader.open():
            assert reader.status is not None
            raise ApiError(500, f"{os.path.basename(path)} cannot be decrypted: {reader.status.describe()}")
        assert reader.header is not None
        total = _plaintext_size(handle.fileno(), handle.tell(), reader.header.chunk_size)
        chunks = reader.chunks()
        head = bytearray()
        layout = _wav_layout(head)
        while layout == "more" and len(head) < WAV_HEAD_LIMIT:
            chunk = next(chunks, None)
            if chunk is None:
                break
            head += chunk.plaintext
            layout = _wav_layout(head)
        status = reader.status  # set only if the chunks ran out already
        if status is not None and status.state not in (OK, TRUNCATED):
            raise ApiError(500, f"{os.path.basename(path)} cannot be decrypted: {status.describe()}")
        length = total
        if isinstance(layout, tuple):
            data_start, block_align = layout
            available = max(0, total - data_start)
            kept = available - available % block_align
            length = data_start + kept
            head[4:8] = min(data_start - 8 + kept, 0xFFFFFFFF).to_bytes(4, "little")
            head[data_start - 4 : data_start] = min(kept, 0xFFFFFFFF).to_bytes(4, "little")
        request.setResponseCode(200)
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"content-length", b"%d" % length)
        request.setHeader(b"accept-ranges", b"none")
        request.setHeader(b"content-disposition", disposition.encode())
        if request.method == b"HEAD":
            handle.close()
            return b""
    except BaseException:
        handle.close()
        raise
    producer = _DecryptingProducer(request, handle, chunks, reader, length, bytes(head[:length]), path)
    request.registerProducer(producer, False)
    return NOT_DONE_YET


def _plaintext_size(fd: int, offset: int, chunk_size: int) -> int:
    """The plaintext bytes of the whole chunks after ``offset``, from their length prefixes.

    Nothing is decrypted here; a chunk that later fails authentication aborts the response.
    """
    size = os.fstat(fd).st_size
    total = 0
    while offset + 4 <= size:
        length = int.from_bytes(os.pread(fd, 4, offset), "big")
        end = offset + 4 + length + TAG_SIZE
        if length > chunk_size or end > size:
            break
        total += length
        offset = end
    return total


def _wav_layout(head: bytes | bytearray) -> tuple[int, int] | str | None:
    """(data offset, block align) of a RIFF/WAVE head, "more" if more bytes are needed, or
    None if it is not a WAV file (then it is served as it is)."""
    if len(head) < 12:
        return "more" if head[:4] == b"RIFF"[: len(head)] else None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    while True:
        if offset + 8 > len(head):
            return "more"
        chunk_id = bytes(head[offset : offset + 4])
        size = int.from_bytes(head[offset + 4 : offset + 8], "little")
        if chunk_id == b"fmt ":
            if offset + 8 + 16 > len(head):
                return "more"
            block_align = int.from_bytes(head[offset + 20 : offset + 22], "little")
        elif chunk_id == b"data":
            return (offset + 8, block_align) if block_align else None
        offset += 8 + size + (size & 1)


@implementer(IPullProducer)
class _DecryptingProducer:
    """Writes ``first`` then each chunk's plaintext, ``length`` bytes in all, one per call."""

    def __init__(
        self, request: Request, handle: Any, chunks: Any, reader: ContainerReader, length: int, first: bytes, path: str
    ) -> None:
        self._request = request
        self._handle = handle
        self._chunks = chunks
        self._reader = reader
        self._remaining = length
        self._pending = first
        self._path = path
        self._done = False
        # A client that goes away: the channel stops its producer, and this closes the file too.
        request.notifyFinish().addErrback(lambda _: self._close())

    def resumeProducing(self) -> None:  # noqa: N802
        if self._done:
            return
        try:
            # Loop past empty chunks: a pull producer that writes nothing is never called again.
            data = b""
            while self._remaining > 0 and not data:
                if self._pending:
                    data, self._pending = self._pending, b""
                else:
                    chunk = next(self._chunks, None)
                    if chunk is None:
                        self._cut_short()
                        return
                    data = chunk.plaintext
                data = data[: self._remaining]
                self._remaining -= len(data)
            if data:
                self._request.write(data)
            if self._remaining <= 0:
                self._close()
                self._request.unregisterProducer()
                self._request.finish()
        except Exception:
            log.failure("decrypting {path} for the API", path=self._path)
            self._cut_short(logged=True)

    def stopProducing(self) -> None:  # noqa: N802
        self._close()

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._handle.close()

    def _cut_short(self, logged: bool = False) -> None:
        if not logged:
            status = self._reader.status
            log.error(
                "{path} stopped decrypting before its end ({status}): response aborted",
                path=self._path,
                status=status.describe() if status is not None else "unknown",
            )
        self._close()
        self._request.unregisterProducer()
        # Closed without finishing: what was sent (all authentic) reaches the client, which
        # sees fewer bytes than Content-Length and knows the body is incomplete.
        self._request.loseConnection()


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


def _header_safe(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


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
