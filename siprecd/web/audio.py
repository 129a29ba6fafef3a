"""A finished recording's audio file for the API, clear or decrypted as the client reads it.

Clear files are served by :class:`twisted.web.static.File` (ranges, HEAD, a producer).
Encrypted files are decrypted one chunk per ``resumeProducing``: plaintext never touches the
disk and the reactor never blocks for a whole file.  The WAV sizes the recorder could not patch
are set from the chunk lengths, read without decrypting; if a chunk then fails authentication
the connection is closed early, so the client sees a short body, never unauthenticated audio.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.static import File
from zope.interface import implementer

from siprecd.crypto.at_rest import SUFFIX
from siprecd.crypto.container import MAGIC, OK, TAG_SIZE, TRUNCATED, ContainerReader
from siprecd.web.errors import ApiError

log = Logger()

CONTENT_TYPES = {".wav": "audio/wav", ".opus": "audio/ogg", ".ogg": "audio/ogg"}
WAV_HEAD_LIMIT = 1 << 20  # plaintext read to find an encrypted WAV's data chunk


def serve_audio(
    request: Request, directory: str, name: str, what: str, session_id: str, *, decrypt: bool, keys: Any
) -> bytes | int:
    """Render the file ``name`` under ``directory`` (``what`` of recording ``session_id``).

    Raises :class:`ApiError`: 404 missing, 403 encrypted with decryption disabled, 501 encrypted
    without a key store (``keys`` None), 500 a file that cannot be decrypted.
    """
    path = os.path.join(directory, name)
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
    if not decrypt:
        raise ApiError(403, f"{name} is encrypted and decryption through the API is disabled")
    if keys is None:
        raise ApiError(501, f"{name} is encrypted and this server has no key store to decrypt it")
    return _serve_encrypted(request, path, keys, content_type, disposition)


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


def _header_safe(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
