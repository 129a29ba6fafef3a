"""The JSON API (siprecd.web.api) and the recordings catalog, over real HTTP on loopback.

A Site with the API under /api listens on 127.0.0.1 (the real reactor); each request is raw
HTTP/1.1 bytes with ``Connection: close`` and the whole reply is read until the server closes,
so a response cut short (an encrypted file that fails authentication half-way) is seen as such.
Live sessions come from a Controller driven through a real SIP stack on a fake reactor, as in
tests/test_siprec_controller.py; finished ones are written to a temporary recording directory
the way the recorder writes them (AtRest.write_session, WavWriter, clear or encrypted).
"""

from __future__ import annotations

import io
import json
import os
import struct
import wave
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from siprecd import __version__
from siprecd.config import load_config
from siprecd.crypto.at_rest import PRIVATE_FILE, AtRest
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.media.rtp import build_rtp
from siprecd.recording.files import session_directory
from siprecd.recording.recorder import stream_file_name
from siprecd.recording.session import iso_utc
from siprecd.recording.wav import WavWriter
from siprecd.sdp import parse
from siprecd.service import build_stack
from siprecd.siprec.controller import build_controller
from siprecd.web.api import ApiResource
from siprecd.web.auth import Protected
from siprecd.web.catalog import Query, RecordingCatalog, parse_time
from tests.test_siprec_controller import (
    PORT_MIN,
    SRC,
    SRS_ADDRESS,
    START,
    Call,
    FakeUDP,
    MediaReactor,
    audio,
    multipart,
    rfc7865,
    rfc7865_sdp,
    sdp_offer,
)

DAY = 86400
T12 = parse_time("2023-11-12T09:00:00Z")
T13A = parse_time("2023-11-13T08:00:00Z")
T13B = parse_time("2023-11-13T17:30:00Z")
T14 = parse_time("2023-11-14T10:00:00Z")


def sid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def pcm(frames: int, channels: int = 1, seed: int = 1) -> bytes:
    return b"".join(struct.pack("<h", ((i * 37 * seed) % 20000) - 10000) for i in range(frames * channels))


def person(pid: str, name: str | None, aor: str | None, numbers: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {"id": pid, "name": name, "aor": aor, "aors": [aor] if aor else [], "numbers": list(numbers), "role": None}


ALICE = person("p-alice", "Alice Smith", "sip:+15550100@atlanta.example", ["+15550100"])
BOB = person("p-bob", "Bob", "sip:bob@biloxi.example")
CAROL = person("p-carol", None, "sip:carol@chicago.example", ["+442079460000"])


# --- a raw HTTP client ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes
    complete: bool  # the body has all Content-Length promised

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        assert self.header("content-type") == "application/json", self.header("content-type")
        return json.loads(self.body)


class _Client(Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        self.done.callback(bytes(self.data))


def parse_reply(raw: bytes, method: str) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if method == "HEAD":
        return Reply(status, headers, body, body == b"")
    length = headers.get("content-length")
    if length is None:
        return Reply(status, headers, body, True)
    expected = int(length[-1])
    return Reply(status, headers, body[:expected], len(body) >= expected)


class HttpTestCase(TestCase):
    """A Site on 127.0.0.1 serving ``self.root``."""

    def listen(self, root: Resource) -> None:
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        client = _Client(("\r\n".join(lines) + "\r\n\r\n").encode())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        await connectProtocol(endpoint, client)
        return parse_reply(await client.done, method)

    async def get(self, path: str, **headers: str) -> Reply:
        return await self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    async def get_json(self, path: str, status: int = 200) -> Any:
        reply = await self.get(path)
        self.assertEqual(reply.status, status, reply.body[:500])
        self.assertTrue(reply.complete)
        self.assertEqual(reply.header("cache-control"), "no-store")
        return reply.json()

    async def error(self, path: str, status: int, *words: str, method: str = "GET") -> Reply:
        reply = await self.request(method, path)
        self.assertEqual(reply.status, status, reply.body[:500])
        document = reply.json()
        self.assertEqual(list(document), ["error"])
        for word in words:
            self.assertIn(word, document["error"])
        return reply


# --- the fixture ------------------------------------------------------------------------------


class ApiTestCase(HttpTestCase):
    encrypt = False  # recordings written encrypted (MemoryKeyStore)
    encrypt_metadata = False
    api_has_keys = True  # the API (and catalog) get the key store
    decrypt = True

    def setUp(self) -> None:
        self.recordings = os.path.abspath(self.mktemp())
        os.makedirs(self.recordings)
        self.keys = MemoryKeyStore()
        self.writer = AtRest(self.keys, chunk_size=1000, encrypt_metadata=self.encrypt_metadata) if self.encrypt else AtRest(None)
        self.config = load_config(
            None,
            {
                "SIPRECD_RECORDING_DIRECTORY": self.recordings,
                "SIPRECD_MEDIA_PORT_MIN": str(PORT_MIN),
                "SIPRECD_MEDIA_PORT_MAX": str(PORT_MIN + 19),
                "SIPRECD_MEDIA_RECEIVE_BUFFER": "0",
            },
        )
        self.clock = MediaReactor()
        self.clock.advance(START)
        server_at_rest = self.writer if self.api_has_keys else AtRest(None)
        self.controller, _ = build_controller(self.clock, self.config, self.writer, port_probe=self.clock.bindable)
        self.stack = build_stack(self.clock, self.config, self.controller)
        self.controller.attach(self.stack)
        self.udp = FakeUDP()
        self.stack.transports.udp = self.udp  # type: ignore[assignment]
        self.stack.core.local_addresses["UDP"] = (SRS_ADDRESS, 5060)
        self.catalog = RecordingCatalog(self.recordings, server_at_rest.keys)
        self.api = ApiResource(self.controller, self.catalog, server_at_rest, self.clock, decrypt=self.decrypt)
        root = Resource()
        root.putChild(b"api", self.wrap(self.api))
        self.listen(root)

    def wrap(self, api: Resource) -> Resource:
        return api

    # what Call needs of a ControllerTestCase
    def responses(self, since: int = 0) -> list[Any]:
        from siprecd.sip.message import Response, parse_message

        return [m for m in (parse_message(d) for d, _, _ in self.udp.sent[since:]) if isinstance(m, Response)]

    # finished sessions on disk, as the recorder leaves them

    def make_session(
        self,
        n: int,
        started: float,
        call_id: str,
        participants: list[dict[str, Any]],
        *,
        state: str = "ended",
        labels: tuple[str | None, ...] = ("1", "2"),
        mix: bool = True,
        sip_from: str = "<sip:src@example.com>;tag=1",
        frames: int = 800,
    ) -> str:
        session_id = sid(n)
        directory = session_directory(self.recordings, session_id, started)
        os.makedirs(directory)
        streams = []
        for index, label in enumerate(labels):
            name = self.writer.audio_name(stream_file_name(index, label, "wav"))
            self.write_wav(os.path.join(directory, name), pcm(frames, seed=index + 1))
            streams.append(
                {"label": label, "index": index, "codec": "PCMU", "file": name, "direction": "recvonly",
                 "sending_participants": [p["id"] for p in participants[index : index + 1]], "events": []}
            )
        mix_doc: dict[str, Any] = {"file": None, "note": "not mixed"}
        if mix:
            name = self.writer.audio_name("mix-stereo.wav")
            self.write_wav(os.path.join(directory, name), pcm(frames, 2, seed=5), channels=2)
            mix_doc = {"file": name, "mode": "stereo", "sample_rate": 8000, "channels": []}
        document = {
            "session_id": session_id,
            "call_id": call_id,
            "state": state,
            "started_at": iso_utc(started),
            "ended_at": iso_utc(started + 90) if state == "ended" else None,
            "end_reason": "BYE from the SRC" if state == "ended" else None,
            "siprec": True,
            "src": {"address": "192.0.2.10", "port": 5062, "transport": "UDP"},
            "sip": {"from": sip_from, "to": "<sip:srs@example.net>"},
            "participants": participants,
            "streams": streams,
            "mix": mix_doc,
            "metadata": {},
            "metadata_files": [],
            "sdp_files": [],
        }
        self.writer.write_session(directory, document)
        return session_id

    def write_wav(self, path: str, data: bytes, channels: int = 1) -> None:
        writer = WavWriter(path, sample_rate=8000, channels=channels, chunk_size=700, first_chunk=700,
                           open_file=self.writer.open_audio())
        writer.write(data)
        writer.finalize()

    def directory(self, n: int) -> str:
        entry = self.catalog.get(sid(n))
        assert entry is not None
        return entry.directory


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def flip_byte(path: str, position: int) -> None:
    """Tamper with one bit of the file at ``position`` (negative: from the end)."""
    with open(path, "r+b") as handle:
        where = position if position >= 0 else os.fstat(handle.fileno()).st_size + position
        handle.seek(where)
        byte = handle.read(1)
        handle.seek(where)
        handle.write(bytes([byte[0] ^ 1]))


def wav_frames(data: bytes) -> tuple[int, int, bytes]:
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getframerate(), reader.getnchannels(), reader.readframes(reader.getnframes())


# --- live sessions and the server ------------------------------------------------------------


class LiveSessionTests(ApiTestCase):
    def start_call(self) -> tuple[Call, str, list[int]]:
        call = Call(self)  # type: ignore[arg-type]
        response = call.setup(*multipart(rfc7865_sdp(), rfc7865("complete.xml")))
        ports = [m.port for m in parse(response.body).media]
        (session_id,) = self.controller.sessions
        return call, session_id, ports

    def send_rtp(self, port: int, count: int, ssrc: int = 0x1234) -> None:
        protocol = self.clock.udpPorts[port].protocol
        for seq in range(count):
            payload = bytes((seq + i * 7) % 256 for i in range(160))
            protocol.datagramReceived(build_rtp(0, seq, 160 * seq, ssrc, payload), ("198.51.100.7", 10000))
            self.clock.advance(0.02)

    async def test_live_sessions_with_figures(self) -> None:
        self.assertEqual(await self.get_json("/api/sessions"), {"sessions": []})
        call, session_id, ports = self.start_call()
        self.send_rtp(ports[0], 25)
        self.clock.advance(1.5)
        sessions = (await self.get_json("/api/sessions"))["sessions"]
        self.assertEqual(len(sessions), 1)
        live = sessions[0]
        self.assertEqual(live["session_id"], session_id)
        self.assertEqual(live["call_id"], call.call_id)
        self.assertEqual(live["state"], "active")
        self.assertEqual(live["started_at"], "2023-11-14T22:13:20.000Z")
        self.assertEqual(live["duration_seconds"], 2.0)  # 25 packets of 20 ms, then 1.5 s
        self.assertEqual(live["src"], {"address": SRC.host, "port": SRC.port, "transport": "UDP"})
        self.assertIsNone(live["srtp"])
        self.assertEqual(
            [(p["name"], p["aor"]) for p in live["participants"]],
            [("Alice", "sip:alice@atlanta.com"), ("Bob", "sip:bob@biloxy.com")],
        )
        self.assertEqual(sorted(live["participants"][0]), ["aor", "id", "name", "numbers"])
        first, second = live["streams"][:2]
        self.assertEqual([s["label"] for s in live["streams"]], ["96", "97", "98", "99"])
        self.assertEqual(
            (first["codec"], first["recorded"], first["direction"], first["on_hold"]), ("PCMU", True, "recvonly", False)
        )
        self.assertEqual((first["packets"], first["bytes"], first["lost"], first["reordered"]), (25, 25 * 160, 0, 0))
        self.assertIsInstance(first["jitter_ms"], float)
        self.assertEqual(first["file"], "stream-1-96.wav")
        self.assertEqual((second["packets"], second["bytes"], second["jitter_ms"]), (0, 0, None))
        self.assertEqual(self.bye(call), 200)

    async def test_live_session_detail(self) -> None:
        call, session_id, ports = self.start_call()
        self.send_rtp(ports[1], 5)
        detail = await self.get_json(f"/api/sessions/{session_id}")
        # The whole session.json view of the live session...
        self.assertEqual(detail["session_id"], session_id)
        self.assertEqual(len(detail["streams"]), 4)
        self.assertEqual(detail["streams"][1]["packets_received"], 5)
        self.assertIn("metadata", detail)
        self.assertEqual(detail["sip"]["user_agent"], "test-src")
        # ... plus the figures of the summary.
        self.assertEqual(detail["duration_seconds"], 0.1)
        self.assertIsNone(detail["srtp"])
        self.assertEqual(detail["summary"]["streams"][1]["packets"], 5)
        self.assertEqual(detail["summary"]["session_id"], session_id)
        # Trailing slash: the same resource.
        self.assertEqual((await self.get_json(f"/api/sessions/{session_id}/"))["session_id"], session_id)
        await self.error(f"/api/sessions/{sid(999)}", 404, "no live recording session")
        # Once it ended, the 404 says where its recording is.
        self.assertEqual(self.bye(call), 200)
        reply = await self.error(f"/api/sessions/{session_id}", 404)
        self.assertIn(f"/api/recordings/{session_id}", reply.json()["error"])

    async def test_participants_follow_metadata_updates(self) -> None:
        call = Call(self)  # type: ignore[arg-type]
        call.setup(*multipart(rfc7865_sdp(), None))
        live = (await self.get_json("/api/sessions"))["sessions"][0]
        self.assertEqual(live["participants"], [])
        response = call.request("UPDATE", *multipart(None, rfc7865("complete.xml")))
        self.assertEqual(response.status, 200)
        live = (await self.get_json("/api/sessions"))["sessions"][0]
        self.assertEqual([p["aor"] for p in live["participants"]], ["sip:alice@atlanta.com", "sip:bob@biloxy.com"])
        self.assertEqual(self.bye(call), 200)
        self.assertEqual(await self.get_json("/api/sessions"), {"sessions": []})
        self.assertEqual(self.api._people, {})  # forgotten with the session

    async def test_server(self) -> None:
        self.clock.advance(12.5)
        server = await self.get_json("/api/server")
        self.assertEqual(server["version"], __version__)
        self.assertEqual(server["uptime_seconds"], 12.5)
        self.assertEqual((server["active_sessions"], server["finished_sessions"]), (0, 0))
        self.assertEqual(server["recording_directory"], self.recordings)
        self.assertIsInstance(server["disk_free_bytes"], int)
        self.assertGreater(server["disk_free_bytes"], 0)
        call, _, _ = self.start_call()
        self.assertEqual((await self.get_json("/api/server"))["active_sessions"], 1)
        self.assertEqual(self.bye(call), 200)
        server = await self.get_json("/api/server")
        self.assertEqual((server["active_sessions"], server["finished_sessions"]), (0, 1))

    async def test_active_recording_is_409_until_it_ends(self) -> None:
        call = Call(self)  # type: ignore[arg-type]
        response = call.setup(*multipart(sdp_offer(audio(10000, "a"), audio(10002, "b")), rfc7865("complete.xml")))
        (session_id,) = self.controller.sessions
        ports = [m.port for m in parse(response.body).media]
        self.send_rtp(ports[0], 50, ssrc=1)
        self.send_rtp(ports[1], 50, ssrc=2)
        await self.error(f"/api/recordings/{session_id}", 409, "still active", f"/api/sessions/{session_id}")
        await self.error(f"/api/recordings/{session_id}/streams/a/audio", 409, "still active")
        self.assertEqual((await self.get_json("/api/recordings"))["total"], 0)
        self.assertEqual(self.bye(call), 200)
        # The real session.json the controller wrote is now a finished recording.
        listing = await self.get_json("/api/recordings")
        self.assertEqual(listing["total"], 1)
        item = listing["recordings"][0]
        self.assertEqual((item["session_id"], item["call_id"]), (session_id, call.call_id))
        self.assertEqual(item["end_reason"], "BYE from the SRC")
        self.assertEqual([p["aor"] for p in item["participants"]], ["sip:alice@atlanta.com", "sip:bob@biloxy.com"])
        self.assertEqual(
            [(s["label"], s["codec"], s["file"]) for s in item["streams"]],
            [("a", "PCMU", "stream-1-a.wav"), ("b", "PCMU", "stream-2-b.wav")],
        )
        self.assertEqual(item["mix"]["file"], "mix-stereo.wav")
        reply = await self.get(item["streams"][0]["audio_url"])
        self.assertEqual((reply.status, reply.header("content-type")), (200, "audio/wav"))
        rate, channels, frames = wav_frames(reply.body)
        self.assertEqual((rate, channels), (8000, 1))
        self.assertGreaterEqual(len(frames) // 2, 50 * 160)
        with open(os.path.join(self.directory_of(session_id), "stream-1-a.wav"), "rb") as handle:
            self.assertEqual(reply.body, handle.read())
        mix = await self.get(item["mix"]["audio_url"])
        self.assertEqual(wav_frames(mix.body)[:2], (8000, 2))

    def directory_of(self, session_id: str) -> str:
        entry = self.catalog.get(session_id)
        assert entry is not None
        return entry.directory

    def bye(self, call: Call) -> int:
        return call.request("BYE").status

    async def test_endpoint_index_unknown_paths_and_methods(self) -> None:
        index = await self.get_json("/api")
        self.assertIn("/api/recordings/{id}/streams/{label}/audio", index["endpoints"])
        self.assertEqual(await self.get_json("/api/"), index)
        await self.error("/api/nothing", 404, "no such API endpoint: /nothing")
        await self.error("/api/sessions/a/b", 404)
        reply = await self.error("/api/sessions", 405, "POST", method="POST")
        self.assertEqual(reply.header("allow"), "GET, HEAD")
        await self.error("/api/recordings/x", 405, method="DELETE")
        head = await self.request("HEAD", "/api/server")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertGreater(int(head.header("content-length") or 0), 10)
        await self.error("/api/sessions/%ff", 400, "UTF-8")


# --- finished recordings ---------------------------------------------------------------------


class RecordingsTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_session(1, T12, "call-one@src", [ALICE, BOB])
        self.make_session(2, T13A, "call-two@src", [CAROL], labels=("1",), mix=False)
        self.make_session(3, T13B, "call-three@src", [], sip_from='"Dave" <sip:+15557777@pbx.example>;tag=9')
        self.make_session(4, T14, "call-four@src", [ALICE], labels=(None, "x y/z"))
        self.make_session(5, T14 + 3600, "call-five@src", [BOB], state="active")  # left by a crash
        # Malformed ones, each in a day that also holds good ones: skipped, never fatal.
        for n, started, data in (
            (6, T13A + 60, b"{not json"),
            (7, T13A + 120, b"[1, 2]"),
            (8, T14 + 60, json.dumps({"session_id": "someone-else", "state": "ended"}).encode()),
            (9, T14 + 120, json.dumps({"session_id": sid(9), "state": "ended", "started_at": "yesterday"}).encode()),
            (10, T12 + 60, b"\xff\xfe"),
        ):
            directory = session_directory(self.recordings, sid(n), started)
            os.makedirs(directory)
            with open(os.path.join(directory, "session.json"), "wb") as handle:
                handle.write(data)
        # Not sessions: the active index, stray files and directories.
        os.makedirs(os.path.join(self.recordings, ".active"))
        os.makedirs(os.path.join(self.recordings, "lost+found"))
        os.makedirs(os.path.join(self.recordings, "2023", "11", "14", sid(11)))  # no session.json

    async def ids(self, query: str = "") -> tuple[list[int], int]:
        listing = await self.get_json("/api/recordings" + query)
        return [int(r["session_id"][-12:]) for r in listing["recordings"]], listing["total"]

    async def test_newest_first_with_shape(self) -> None:
        listing = await self.get_json("/api/recordings")
        self.assertEqual((listing["total"], listing["limit"], listing["offset"]), (4, 50, 0))
        self.assertEqual([r["call_id"] for r in listing["recordings"]],
                         ["call-four@src", "call-three@src", "call-two@src", "call-one@src"])
        one = listing["recordings"][3]
        self.assertEqual(one["session_id"], sid(1))
        self.assertEqual((one["started_at"], one["ended_at"]), ("2023-11-12T09:00:00.000Z", "2023-11-12T09:01:30.000Z"))
        self.assertEqual(one["duration_seconds"], 90.0)
        self.assertEqual((one["state"], one["end_reason"]), ("ended", "BYE from the SRC"))
        self.assertEqual(one["url"], f"/api/recordings/{sid(1)}")
        self.assertEqual(
            one["participants"],
            [
                {"id": "p-alice", "name": "Alice Smith", "aor": "sip:+15550100@atlanta.example", "numbers": ["+15550100"]},
                {"id": "p-bob", "name": "Bob", "aor": "sip:bob@biloxi.example", "numbers": []},
            ],
        )
        self.assertEqual(
            [(s["label"], s["codec"], s["file"], s["audio_url"]) for s in one["streams"]],
            [
                ("1", "PCMU", "stream-1-1.wav", f"/api/recordings/{sid(1)}/streams/1/audio"),
                ("2", "PCMU", "stream-2-2.wav", f"/api/recordings/{sid(1)}/streams/2/audio"),
            ],
        )
        self.assertEqual(one["mix"], {"file": "mix-stereo.wav", "audio_url": f"/api/recordings/{sid(1)}/mix/audio"})
        two = listing["recordings"][2]
        self.assertIsNone(two["mix"])
        # An unlabelled stream and a label that needs quoting still get a working URL.
        four = listing["recordings"][0]
        self.assertEqual(
            [s["audio_url"] for s in four["streams"]],
            [f"/api/recordings/{sid(4)}/streams/stream-0/audio", f"/api/recordings/{sid(4)}/streams/x%20y%2Fz/audio"],
        )
        for stream in four["streams"]:
            reply = await self.get(stream["audio_url"])
            self.assertEqual(reply.status, 200, reply.body[:200])

    async def test_pagination(self) -> None:
        # Cold: the page is parsed, the older days only counted (a malformed one included).
        cold = await self.get_json("/api/recordings?limit=2")
        self.assertEqual([r["call_id"] for r in cold["recordings"]], ["call-four@src", "call-three@src"])
        self.assertEqual((cold["total"], cold["total_exact"]), (5, False))
        listing = await self.get_json("/api/recordings")
        self.assertEqual((listing["total"], listing["total_exact"]), (4, True))
        self.assertEqual(await self.ids("?limit=2"), ([4, 3], 4))
        self.assertEqual(await self.ids("?limit=2&offset=2"), ([2, 1], 4))
        self.assertEqual(await self.ids("?limit=3&offset=3"), ([1], 4))
        self.assertEqual(await self.ids("?offset=10"), ([], 4))
        # The same pages when the catalog already knows every session (counting from the cache).
        self.assertEqual(await self.ids("?limit=1"), ([4], 4))
        self.assertEqual(await self.ids("?limit=1&offset=1"), ([3], 4))

    async def test_time_range(self) -> None:
        self.assertEqual(await self.ids("?from=2023-11-13"), ([4, 3, 2], 3))
        self.assertEqual(await self.ids("?to=2023-11-13"), ([1], 1))
        self.assertEqual(await self.ids("?from=2023-11-13T08:00:00Z&to=2023-11-13T17:30:00Z"), ([2], 1))  # to excluded
        self.assertEqual(await self.ids("?from=2023-11-13T08:00:00.001Z"), ([4, 3], 2))
        # An offset (its '+' sent as %2B, or turned into a space by a careless client).
        self.assertEqual(await self.ids("?from=2023-11-13T18:00:00%2B01:00&to=2023-11-13T19:00:00+01:00"), ([3], 1))
        self.assertEqual(await self.ids(f"?from={int(T13B)}"), ([4, 3], 2))  # epoch seconds
        self.assertEqual(await self.ids("?from=2023-11-15"), ([], 0))
        self.assertEqual(await self.ids("?from=2023-11-13&limit=1&offset=1"), ([3], 3))

    async def test_participant_filter(self) -> None:
        self.assertEqual(await self.ids("?participant=alice"), ([4, 1], 2))  # a name, any case
        self.assertEqual(await self.ids("?participant=BILOXI.example"), ([1], 1))  # an AoR
        self.assertEqual(await self.ids("?participant=" + quote("+1 555-0100")), ([4, 1], 2))  # a number
        self.assertEqual(await self.ids("?participant=7946"), ([2], 1))  # part of an extension number
        self.assertEqual(await self.ids("?participant=5557777"), ([3], 1))  # From, no metadata
        self.assertEqual(await self.ids("?participant=dave"), ([3], 1))
        self.assertEqual(await self.ids("?participant=nobody"), ([], 0))
        self.assertEqual(await self.ids("?participant=alice&limit=1&offset=1"), ([1], 2))
        self.assertEqual(await self.ids("?participant=alice&from=2023-11-13"), ([4], 1))

    async def test_call_id_filter(self) -> None:
        self.assertEqual(await self.ids("?call_id=call-two@src"), ([2], 1))
        self.assertEqual(await self.ids("?call_id=call-two"), ([], 0))  # exact
        self.assertEqual(await self.ids("?call_id=call-five@src"), ([], 0))  # not finished
        self.assertEqual(await self.ids("?call_id=call-one@src&participant=bob"), ([1], 1))

    async def test_bad_parameters(self) -> None:
        await self.error("/api/recordings?from=yesterday", 400, "from", "ISO 8601")
        await self.error("/api/recordings?to=" + "9" * 30, 400, "to:")
        await self.error("/api/recordings?to=", 400, "to:")
        await self.error("/api/recordings?from=2023-11-14&to=2023-11-13", 400, "from is later than to")
        await self.error("/api/recordings?limit=0", 400, "limit")
        await self.error("/api/recordings?limit=1001", 400, "limit")
        await self.error("/api/recordings?limit=ten", 400, "limit")
        await self.error("/api/recordings?offset=-1", 400, "offset")
        await self.error("/api/recordings?participant=%20", 400, "participant is empty")
        await self.error("/api/recordings?call_id=", 400, "call_id is empty")
        await self.error("/api/recordings?caller=alice", 400, "unknown parameter 'caller'")
        await self.error("/api/recordings?limit=1&limit=2", 400, "limit is given 2 times")

    async def test_recording_detail(self) -> None:
        document = await self.get_json(f"/api/recordings/{sid(1)}")
        with open(os.path.join(self.directory(1), "session.json"), encoding="utf-8") as handle:
            on_disk = json.load(handle)
        links = document.pop("links")
        self.assertEqual(document, on_disk)
        self.assertEqual(
            links,
            {
                "self": f"/api/recordings/{sid(1)}",
                "audio": {"1": f"/api/recordings/{sid(1)}/streams/1/audio", "2": f"/api/recordings/{sid(1)}/streams/2/audio"},
                "mix_audio": f"/api/recordings/{sid(1)}/mix/audio",
            },
        )
        await self.error(f"/api/recordings/{sid(404)}", 404, "no recording")
        await self.error(f"/api/recordings/{sid(5)}", 409, "not finished", "active")
        await self.error(f"/api/recordings/{sid(6)}", 404)  # malformed: as good as absent
        await self.error("/api/recordings/..%2F..%2Fetc", 404, "not a session id")
        await self.error("/api/recordings/.active", 404)

    async def test_clear_audio(self) -> None:
        directory = self.directory(1)
        for url, name in (
            (f"/api/recordings/{sid(1)}/streams/1/audio", "stream-1-1.wav"),
            (f"/api/recordings/{sid(1)}/streams/2/audio", "stream-2-2.wav"),
            (f"/api/recordings/{sid(1)}/streams/mix/audio", "mix-stereo.wav"),
            (f"/api/recordings/{sid(1)}/mix/audio", "mix-stereo.wav"),
        ):
            reply = await self.get(url)
            self.assertEqual(reply.status, 200)
            self.assertTrue(reply.complete)
            self.assertEqual(reply.header("content-type"), "audio/wav")
            self.assertEqual(reply.header("content-disposition"), f'inline; filename="{sid(1)}-{name}"')
            with open(os.path.join(directory, name), "rb") as handle:
                self.assertEqual(reply.body, handle.read())
        rate, channels, frames = wav_frames(reply.body)
        self.assertEqual((rate, channels, frames), (8000, 2, pcm(800, 2, seed=5)))
        # HEAD and ranges come with static.File.
        head = await self.request("HEAD", f"/api/recordings/{sid(1)}/streams/1/audio")
        self.assertEqual((head.status, head.header("content-length"), head.body), (200, str(44 + 1600), b""))
        part = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio", Range="bytes=44-47")
        self.assertEqual((part.status, part.body), (206, pcm(2, seed=1)))

    async def test_segments_of_a_resumed_session(self) -> None:
        """A session resumed after a restart has one file per segment: all of them listed, each
        served with ?segment=N; without it, the stream's current file (the last segment)."""
        directory = self.directory(1)
        self.write_wav(os.path.join(directory, "stream-1-1.seg2.wav"), pcm(400, seed=9))
        path = os.path.join(directory, "session.json")
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        document["streams"][0]["file"] = "stream-1-1.seg2.wav"
        document["streams"][0]["segments"] = ["stream-1-1.wav", "stream-1-1.seg2.wav", "../escape.wav"]
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        listing = json.loads((await self.get("/api/recordings")).body)
        (item,) = [i for i in listing["recordings"] if i["session_id"] == sid(1)]
        self.assertEqual(item["streams"][0]["segments"], ["stream-1-1.wav", "stream-1-1.seg2.wav"])
        self.assertEqual(item["streams"][1]["segments"], ["stream-2-2.wav"])  # never resumed
        base = f"/api/recordings/{sid(1)}/streams/1/audio"
        for query, name in (("?segment=1", "stream-1-1.wav"), ("?segment=2", "stream-1-1.seg2.wav"), ("", "stream-1-1.seg2.wav")):
            reply = await self.get(base + query)
            self.assertEqual(reply.status, 200, query)
            with open(os.path.join(directory, name), "rb") as handle:
                self.assertEqual(reply.body, handle.read(), query)
        await self.error(base + "?segment=3", 404, "segments 1..2")
        await self.error(base + "?segment=x", 404, "segments 1..2")

    async def test_audio_not_found(self) -> None:
        await self.error(f"/api/recordings/{sid(1)}/streams/3/audio", 404, "no stream '3'", "streams: 1, 2")
        await self.error(f"/api/recordings/{sid(2)}/mix/audio", 404, "the mix", "has no file")
        await self.error(f"/api/recordings/{sid(2)}/streams/mix/audio", 404, "has no file")
        await self.error(f"/api/recordings/{sid(404)}/streams/1/audio", 404, "no recording")
        await self.error(f"/api/recordings/{sid(5)}/streams/1/audio", 409, "not finished")
        await self.error(f"/api/recordings/{sid(1)}/streams/1/video", 404)
        os.unlink(os.path.join(self.directory(1), "stream-2-2.wav"))
        await self.error(f"/api/recordings/{sid(1)}/streams/2/audio", 404, "stream-2-2.wav", "missing")

    async def test_catalog_follows_the_disk(self) -> None:
        self.assertEqual(await self.ids(), ([4, 3, 2, 1], 4))
        # A new one, a rewritten one (now unreadable), a removed one.
        self.make_session(12, T13A + 30, "call-twelve@src", [])
        with open(os.path.join(self.directory(3), "session.json"), "w", encoding="utf-8") as handle:
            handle.write("{broken")
        import shutil

        shutil.rmtree(self.directory(2))
        self.assertEqual(await self.ids(), ([4, 12, 1], 3))
        self.assertEqual(await self.ids("?limit=1"), ([4], 3))


# --- encrypted recordings ---------------------------------------------------------------------


class EncryptedTests(ApiTestCase):
    encrypt = True
    encrypt_metadata = True

    def setUp(self) -> None:
        super().setUp()
        self.make_session(1, T12, "call-one@src", [ALICE, BOB], frames=3000)

    async def test_encrypted_wav_decrypted_on_the_fly(self) -> None:
        directory = self.directory(1)
        self.assertEqual(sorted(n for n in os.listdir(directory) if n.endswith(".enc")),
                         ["mix-stereo.wav.enc", PRIVATE_FILE, "stream-1-1.wav.enc", "stream-2-2.wav.enc"])
        for url, expected, channels in (
            (f"/api/recordings/{sid(1)}/streams/1/audio", pcm(3000, seed=1), 1),
            (f"/api/recordings/{sid(1)}/streams/2/audio", pcm(3000, seed=2), 1),
            (f"/api/recordings/{sid(1)}/mix/audio", pcm(3000, 2, seed=5), 2),
        ):
            reply = await self.get(url)
            self.assertEqual(reply.status, 200, reply.body[:300])
            self.assertTrue(reply.complete)
            self.assertEqual(reply.header("content-type"), "audio/wav")
            self.assertEqual(int(reply.header("content-length") or 0), 44 + len(expected))
            self.assertEqual(wav_frames(reply.body), (8000, channels, expected))
            # The sizes are fixed: RIFF and data lengths are the real ones.
            self.assertEqual(struct.unpack_from("<I", reply.body, 4)[0], 36 + len(expected))
            self.assertEqual(struct.unpack_from("<I", reply.body, 40)[0], len(expected))
        self.assertEqual(
            (await self.get(f"/api/recordings/{sid(1)}/streams/1/audio")).header("content-disposition"),
            f'inline; filename="{sid(1)}-stream-1-1.wav"',
        )
        head = await self.request("HEAD", f"/api/recordings/{sid(1)}/streams/1/audio")
        self.assertEqual((head.status, head.header("content-length"), head.body), (200, str(44 + 6000), b""))

    async def test_tiny_chunks(self) -> None:
        # The WAV header spans several chunks; every chunk is one resumeProducing.
        self.writer.chunk_size = 16
        self.make_session(2, T13A, "call-two@src", [CAROL], labels=("1",), mix=False, frames=101)
        reply = await self.get(f"/api/recordings/{sid(2)}/streams/1/audio")
        self.assertEqual(wav_frames(reply.body), (8000, 1, pcm(101, seed=1)))

    async def test_large_file_streams_through_flow_control(self) -> None:
        # 4 MB: the transport's buffer fills and asks for more many times.
        self.writer.chunk_size = 16384
        directory = self.directory(1)
        path = os.path.join(directory, "stream-1-1.wav.enc")
        os.unlink(path)
        data = pcm(1000, seed=3) * 1000
        writer = WavWriter(path, sample_rate=8000, chunk_size=65536, first_chunk=65536, open_file=self.writer.open_audio())
        writer.write(data)
        writer.finalize()
        reply = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio")
        self.assertTrue(reply.complete)
        self.assertEqual(len(reply.body), 44 + len(data))
        self.assertEqual(wav_frames(reply.body)[2], data)

    async def test_client_leaving_mid_stream_closes_the_file(self) -> None:
        path = os.path.join(self.directory(1), "stream-1-1.wav.enc")
        os.unlink(path)
        writer = WavWriter(path, sample_rate=8000, chunk_size=65536, first_chunk=65536, open_file=self.writer.open_audio())
        writer.write(pcm(1000, seed=3) * 2000)
        writer.finalize()

        def open_handles() -> int:
            fds = os.listdir("/proc/self/fd")
            return sum(1 for fd in fds if _readlink(f"/proc/self/fd/{fd}") == path)

        class Leaving(_Client):
            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                super().dataReceived(data)
                self.transport.abortConnection()

        client = Leaving(f"GET /api/recordings/{sid(1)}/streams/1/audio HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        await connectProtocol(endpoint, client)
        await client.done
        for _ in range(100):
            if not open_handles():
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(open_handles(), 0)

    async def test_truncated_file_plays_up_to_the_crash(self) -> None:
        directory = self.directory(1)
        path = os.path.join(directory, "stream-1-1.wav.enc")
        os.unlink(path)
        writer = WavWriter(path, sample_rate=8000, chunk_size=700, first_chunk=700, open_file=self.writer.open_audio())
        writer.write(pcm(1000, seed=1))
        writer.flush()
        writer.write(pcm(10, seed=3))  # buffered, never flushed: lost in the "crash"
        writer.close()
        os.rename(path + ".part", path)  # what start-up recovery publishes
        reply = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio")
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.complete)
        self.assertEqual(wav_frames(reply.body), (8000, 1, pcm(1000, seed=1)))

    async def test_tampered_file_is_cut_short(self) -> None:
        flip_byte(os.path.join(self.directory(1), "stream-1-1.wav.enc"), -900)  # in a late chunk's ciphertext
        reply = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio")
        self.assertEqual(reply.status, 200)
        self.assertFalse(reply.complete)  # aborted: the client knows the body is short
        self.assertLess(len(reply.body), 44 + 6000 - 900)
        # A tampered header is refused before anything is sent.
        flip_byte(os.path.join(self.directory(1), "stream-2-2.wav.enc"), 30)
        await self.error(f"/api/recordings/{sid(1)}/streams/2/audio", 500, "cannot be decrypted")

    async def test_private_metadata(self) -> None:
        with open(os.path.join(self.directory(1), "session.json"), encoding="utf-8") as handle:
            public = json.load(handle)
        self.assertNotIn("participants", public)
        document = await self.get_json(f"/api/recordings/{sid(1)}")
        self.assertEqual([p["name"] for p in document["participants"]], ["Alice Smith", "Bob"])
        self.assertEqual(document["sip"]["from"], "<sip:src@example.com>;tag=1")
        self.assertEqual(document["private_file"], PRIVATE_FILE)
        self.assertNotIn("note", document)
        listing = await self.get_json("/api/recordings?participant=alice")
        self.assertEqual(listing["total"], 1)
        self.assertEqual(listing["recordings"][0]["participants_encrypted"], False)
        self.assertEqual(len(listing["recordings"][0]["participants"]), 2)


class EncryptedWithoutKeysTests(ApiTestCase):
    encrypt = True
    encrypt_metadata = True
    api_has_keys = False

    async def test_no_key_store(self) -> None:
        self.make_session(1, T12, "call-one@src", [ALICE, BOB])
        await self.error(f"/api/recordings/{sid(1)}/streams/1/audio", 501, "encrypted", "no key store")
        document = await self.get_json(f"/api/recordings/{sid(1)}")
        self.assertNotIn("participants", document)
        self.assertIn("no key store", document["note"])
        item = (await self.get_json("/api/recordings"))["recordings"][0]
        self.assertEqual((item["participants"], item["participants_encrypted"]), ([], True))
        self.assertEqual((await self.get_json("/api/recordings?participant=alice"))["total"], 0)
        self.assertEqual((await self.get_json("/api/recordings?call_id=call-one@src"))["total"], 1)


class DecryptionDisabledTests(ApiTestCase):
    encrypt = True
    decrypt = False

    async def test_refused(self) -> None:
        self.make_session(1, T12, "call-one@src", [ALICE])
        await self.error(f"/api/recordings/{sid(1)}/streams/1/audio", 403, "disabled")
        self.assertFalse((await self.get_json("/api/server"))["api_decrypts"])


class ProtectedApiTests(ApiTestCase):
    def wrap(self, api: Resource) -> Resource:
        return Protected(api, {"s3cret-token-0123456789"}, {"ops": "pass word"})

    async def test_token_needed(self) -> None:
        self.make_session(1, T12, "call-one@src", [ALICE])
        reply = await self.get("/api/recordings")
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.headers["www-authenticate"], ['Basic realm="siprecd", charset="UTF-8"', 'Bearer realm="siprecd"'])
        reply = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio", Authorization="Bearer wrong")
        self.assertEqual(reply.status, 401)
        reply = await self.get("/api/recordings", Authorization="Bearer s3cret-token-0123456789")
        self.assertEqual(reply.json()["total"], 1)
        reply = await self.get(f"/api/recordings/{sid(1)}/streams/1/audio", Authorization="Basic b3BzOnBhc3Mgd29yZA==")
        self.assertEqual((reply.status, reply.header("content-type")), (200, "audio/wav"))
        reply = await self.get("/api", Authorization="Bearer s3cret-token-0123456789")
        self.assertIn("endpoints", reply.json())
        self.assertEqual((await self.get("/api")).status, 401)


# --- the catalog on its own -------------------------------------------------------------------


class CatalogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.catalog = RecordingCatalog(self.root)
        self.parsed: list[str] = []
        original = self.catalog._parse

        def counting(directory: str, session_id: str, stamp: tuple[int, int]) -> Any:
            self.parsed.append(session_id)
            return original(directory, session_id, stamp)

        self.catalog._parse = counting  # type: ignore[method-assign]

    def write(self, n: int, started: float, state: str = "ended") -> str:
        directory = session_directory(self.root, sid(n), started)
        os.makedirs(directory, exist_ok=True)
        document = {"session_id": sid(n), "call_id": f"c{n}", "state": state, "started_at": iso_utc(started),
                    "ended_at": iso_utc(started + 1), "streams": []}
        with open(os.path.join(directory, "session.json"), "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        return directory

    def test_parsed_once_per_version(self) -> None:
        for n in range(6):
            self.write(n, T12 + n * 60)
        self.assertEqual(self.catalog.query(Query())[1:], (6, True))
        self.assertEqual(len(self.parsed), 6)
        self.parsed.clear()
        self.catalog.query(Query())
        self.catalog.query(Query(participant="x"))
        self.assertEqual(self.parsed, [])
        directory = self.write(3, T12 + 180, state="ended")
        os.utime(os.path.join(directory, "session.json"), ns=(1, 1))  # a new version
        self.catalog.query(Query())
        self.assertEqual(self.parsed, [sid(3)])

    def test_unfiltered_query_stops_at_its_page(self) -> None:
        for day in range(10):
            for n in range(3):
                self.write(day * 10 + n, T12 - day * DAY + n * 60)
        os.makedirs(os.path.join(self.root, ".active"))
        self.write(99, T12 - 5 * DAY, state="active")
        with open(os.path.join(self.root, ".active", sid(99)), "w") as handle:
            handle.write("x")
        page, total, exact = self.catalog.query(Query(limit=2))
        self.assertEqual(([e.session_id for e in page], total, exact), ([sid(2), sid(1)], 30, False))
        self.assertEqual(sorted(self.parsed), [sid(0), sid(1), sid(2)])  # the newest day only
        for _ in self.catalog.warm():
            pass
        self.assertEqual(len(self.parsed), 31)
        self.parsed.clear()
        page, total, exact = self.catalog.query(Query(limit=2, offset=2))
        self.assertEqual(([e.session_id for e in page], total, exact), ([sid(0), sid(12)], 30, True))
        self.assertEqual(self.parsed, [])
        # A time range: sessions of its edge days are always checked.
        catalog = RecordingCatalog(self.root)
        start = T12 - 2 * DAY + 30
        page, total, exact = catalog.query(Query(start=start, end=T12 + 61, limit=1))
        self.assertEqual(([e.session_id for e in page], total, exact), ([sid(1)], 2 + 3 + 2, False))

    def test_unfinished_sessions_are_rechecked_when_counting(self) -> None:
        self.write(1, T12)
        self.write(2, T12 - DAY, state="active")
        os.makedirs(os.path.join(self.root, ".active"))
        with open(os.path.join(self.root, ".active", sid(2)), "w") as handle:
            handle.write("x")
        self.assertEqual(self.catalog.query(Query(limit=1))[1:], (1, True))  # listed as active
        self.assertEqual(self.catalog.query(Query())[1:], (1, True))  # now cached as active
        self.write(2, T12 - DAY, state="ended")
        os.unlink(os.path.join(self.root, ".active", sid(2)))
        os.utime(os.path.join(session_directory(self.root, sid(2), T12 - DAY), "session.json"), ns=(5, 5))
        self.assertEqual(self.catalog.query(Query(limit=1))[1:], (2, True))

    def test_get_by_id(self) -> None:
        self.write(1, T12)
        self.write(2, T14)
        self.assertEqual(self.catalog.get(sid(1)).call_id, "c1")  # type: ignore[union-attr]
        self.assertIsNone(self.catalog.get(sid(3)))
        self.assertIsNone(self.catalog.get("../../etc"))
        self.assertIsNone(self.catalog.get(""))

    def test_malformed_is_logged_once_and_skipped(self) -> None:
        self.write(1, T12)
        directory = session_directory(self.root, sid(2), T12)
        os.makedirs(directory)
        with open(os.path.join(directory, "session.json"), "wb") as handle:
            handle.write(b"[" * 100000)  # deep nesting: RecursionError, not a crash
        self.assertEqual([e.session_id for e in self.catalog.query(Query())[0]], [sid(1)])
        self.assertEqual([e.session_id for e in self.catalog.query(Query())[0]], [sid(1)])
        self.assertEqual(self.parsed.count(sid(2)), 1)
        self.assertIsNone(self.catalog.get(sid(2)))

    def test_cache_is_bounded(self) -> None:
        self.catalog.max_entries = 4
        for day in range(4):
            for n in range(2):
                self.write(day * 10 + n, T12 - day * DAY + n)
        self.assertEqual(self.catalog.query(Query(participant="nobody")), ([], 0, True))
        self.assertLessEqual(self.catalog._size, 4)
        self.assertEqual(self.catalog.query(Query())[1], 8)

    def test_parse_time(self) -> None:
        self.assertEqual(parse_time("2023-11-14T22:13:20Z"), START)
        self.assertEqual(parse_time("2023-11-14T22:13:20.000Z"), START)
        self.assertEqual(parse_time("2023-11-14T23:13:20+01:00"), START)
        self.assertEqual(parse_time("2023-11-14T23:13:20 01:00"), START)
        self.assertEqual(parse_time("2023-11-14T22:13:20"), START)
        self.assertEqual(parse_time(str(START)), START)
        self.assertEqual(parse_time("2023-11-14"), START - (22 * 3600 + 13 * 60 + 20))
        for bad in ("", "yesterday", "2023-13-01", "1e400", "9" * 30):
            self.assertRaises(ValueError, parse_time, bad)
