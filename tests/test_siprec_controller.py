"""The SIPREC controller driven through a real SIP stack (RFC 7866, RFC 7865).

Every test sends SIP messages as bytes into :class:`SIPStack` (UDP source), reads the responses
the stack writes to a fake UDP transport, and checks the answer SDP and the session.json the
controller writes.  The reactor is a MemoryReactorClock with ``listenUDP`` added (Twisted's
MemoryReactor has none): it is the clock of the transaction timers and the reactor the
PortAllocator binds RTP/RTCP ports on, so the test sees exactly which ports are bound.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.config import ConfigError, load_config
from siprecd.crypto.at_rest import AtRest
from siprecd.recording.files import SessionFiles
from siprecd.sdp import SessionDescription, parse
from siprecd.service import build_stack
from siprecd.sip.message import Request, Response, parse_message
from siprecd.sip.source import Source
from siprecd.siprec.controller import build_controller

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"
START = 1_700_000_000  # 2023-11-14T22:13:20Z
START_ISO = "2023-11-14T22:13:20.000Z"
SRC = Source("UDP", "192.0.2.10", 5062)
SRS_ADDRESS = "192.0.2.1"
PORT_MIN = 40000


# --- the reactor -----------------------------------------------------------------------------


class FakeUDPPort:
    def __init__(self, reactor: MediaReactor, port: int, protocol: Any, interface: str) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.stopped = 0

    def stopListening(self) -> None:  # noqa: N802
        self.stopped += 1
        if self.reactor.udpPorts.get(self.port) is self:
            del self.reactor.udpPorts[self.port]

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("UDP", self.interface, self.port)


class MediaReactor(MemoryReactorClock):
    """MemoryReactorClock plus IReactorUDP: ``udpPorts`` holds the ports bound right now."""

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: dict[int, FakeUDPPort] = {}
        self.every_udp_port: list[FakeUDPPort] = []
        self.taken: set[int] = set()  # ports "another process" holds

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakeUDPPort:  # noqa: N802,N803
        if port in self.taken or port in self.udpPorts:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))
        listening = FakeUDPPort(self, port, protocol, interface)
        self.udpPorts[port] = listening
        self.every_udp_port.append(listening)
        return listening


class FakeUDP:
    """What the stack writes on its UDP transport (``Transports.udp``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, int]] = []

    def send(self, data: bytes, host: str, port: int) -> None:
        self.sent.append((data, host, port))


# --- corpus ----------------------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def corpus_offer(name: str) -> tuple[bytes, str]:
    """A corpus file as an INVITE body (CRLF) and its Content-Type.

    Multipart bodies: the boundary is the first ``--xxx`` line.  Files without one are SDP.
    """
    body = crlf((CORPUS / name).read_bytes())
    match = re.search(rb"^--(\S+)[ \t]*\r?$", body, re.M)
    if match is None:
        return body, "application/sdp"
    return body, f"multipart/mixed;boundary={match.group(1).decode()}"


def corpus_sdps(name: str) -> list[bytes]:
    """The SDPs of a ``sample-*.txt`` file (separated by ``__split_here__`` lines)."""
    text = (CORPUS / name).read_bytes()
    return [crlf(part.strip(b"\n") + b"\n") for part in text.split(b"__split_here__")]


def rfc7865(name: str) -> bytes:
    return (CORPUS / "rfc7865" / name).read_bytes()


def multipart(sdp: bytes | None, metadata: bytes | None, *, boundary: str = "siprec-boundary",
              metadata_type: str = "application/rs-metadata+xml") -> tuple[bytes, str]:
    parts = []
    if sdp is not None:
        parts.append(b"Content-Type: application/sdp\r\n\r\n" + sdp)
    if metadata is not None:
        parts.append(
            f"Content-Type: {metadata_type}\r\nContent-Disposition: recording-session\r\n\r\n".encode()
            + metadata
        )
    delimiter = f"--{boundary}\r\n".encode()
    body = b"".join(delimiter + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/mixed;boundary={boundary}"


def sdp_offer(*mlines: str, session_c: str = "198.51.100.7", version: int = 1, session_attrs: str = "") -> bytes:
    head = f"v=0\no=src 4242 {version} IN IP4 198.51.100.7\ns=-\nc=IN IP4 {session_c}\nt=0 0\n{session_attrs}"
    return crlf((head + "".join(mlines)).encode())


def audio(port: int, label: str | None, direction: str = "sendonly", formats: str = "0 101",
          extra: str = "") -> str:
    maps = {
        "0": "a=rtpmap:0 PCMU/8000\n",
        "8": "a=rtpmap:8 PCMA/8000\n",
        "9": "a=rtpmap:9 G722/8000\n",
        "18": "a=rtpmap:18 G729/8000\n",
        "101": "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\n",
    }
    lines = f"m=audio {port} RTP/AVP {formats}\n" + "".join(maps[f] for f in formats.split())
    if label is not None:
        lines += f"a=label:{label}\n"
    if direction:
        lines += f"a={direction}\n"
    return lines + extra


RFC7865_LABELS = ("96", "97", "98", "99")
ALICE = "srfBElmCRp2QB23b7Mpk0w=="
BOB = "zSfPoSvdSDCmU3A3TRDxAw=="


def rfc7865_sdp(direction: str = "sendonly", version: int = 1) -> bytes:
    return sdp_offer(*(audio(10000 + 2 * i, label, direction) for i, label in enumerate(RFC7865_LABELS)), version=version)


# --- the SRC side of a dialog ----------------------------------------------------------------


class Call:
    """One SRC dialog: builds requests as bytes, feeds them to the stack, returns responses."""

    def __init__(self, test: ControllerTestCase, *, call_id: str | None = None) -> None:
        self.test = test
        self.call_id = call_id or f"{uuid.uuid4()}@src.example.com"
        self.from_tag = uuid.uuid4().hex[:10]
        self.to_tag: str | None = None
        self.cseq = 0
        self.last_invite_cseq = 0
        self.last_invite_branch = ""
        self.last_invite_status = 0
        self.error_to_tag: str | None = None
        self.request_uri = f"sip:srs@{SRS_ADDRESS}:5060"

    def build(self, method: str, *, body: bytes = b"", content_type: str | None = None,
              headers: tuple[tuple[str, str], ...] = (), contact: str | None = "<sip:src@192.0.2.10:5062>;+sip.src",
              require: bool = True, cseq: int | None = None, branch: str | None = None) -> tuple[bytes, str]:
        branch = branch or f"z9hG4bK{uuid.uuid4().hex[:16]}"
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to = "<sip:srs@example.net>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"{method} {self.request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:src@example.com>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if contact is not None:
            lines.append(f"Contact: {contact}")
        if require and method == "INVITE" and self.to_tag is None:
            lines.append("Require: siprec")
        lines.append("User-Agent: test-src")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch

    def request(self, method: str, body: bytes = b"", content_type: str | None = None, **kwargs: Any) -> Response:
        data, branch = self.build(method, body=body, content_type=content_type, **kwargs)
        if method == "INVITE":
            self.last_invite_cseq = self.cseq
            self.last_invite_branch = branch
        before = len(self.test.udp.sent)
        self.test.stack.receive(data, SRC)
        finals = [r for r in self.test.responses(before) if r.top_via.branch == branch and r.status >= 200]
        self.test.assertEqual(len(finals), 1, f"{method}: expected one final response, got {finals}")
        response = finals[0]
        if method == "INVITE":
            self.last_invite_status = response.status
            self.error_to_tag = response.to.tag if response.status >= 300 else None
            if response.status < 300 and self.to_tag is None:
                self.to_tag = response.to.tag
        return response

    def invite(self, body: bytes, content_type: str = "application/sdp", **kwargs: Any) -> Response:
        return self.request("INVITE", body, content_type, **kwargs)

    def ack(self) -> None:
        """ACK the last INVITE: a new transaction for a 2xx, the INVITE's own branch (and To
        tag) for an error response (RFC 3261 §17.1.1.3)."""
        if self.last_invite_status >= 300:
            to_tag = self.to_tag
            self.to_tag = self.to_tag or self.error_to_tag
            data, _ = self.build("ACK", cseq=self.last_invite_cseq, branch=self.last_invite_branch)
            self.to_tag = to_tag
        else:
            data, _ = self.build("ACK", cseq=self.last_invite_cseq)
        before = len(self.test.udp.sent)
        self.test.stack.receive(data, SRC)
        self.test.assertEqual(self.test.responses(before), [])

    def setup(self, body: bytes, content_type: str = "application/sdp", **kwargs: Any) -> Response:
        """INVITE that must succeed, then ACK."""
        response = self.invite(body, content_type, **kwargs)
        self.test.assertEqual(response.status, 200, response.to_bytes().decode(errors="replace"))
        self.ack()
        return response

    def reinvite(self, body: bytes = b"", content_type: str = "application/sdp") -> Response:
        response = self.request("INVITE", body, content_type if body else None)
        self.ack()
        return response


# --- the test case ---------------------------------------------------------------------------


class ControllerTestCase(SynchronousTestCase):
    environment: dict[str, str] = {}

    def setUp(self) -> None:
        self.start()

    def start(self, **environment: str) -> None:
        self.recordings = os.path.abspath(self.mktemp())
        env = {
            "SIPRECD_RECORDING_DIRECTORY": self.recordings,
            "SIPRECD_MEDIA_PORT_MIN": str(PORT_MIN),
            "SIPRECD_MEDIA_PORT_MAX": str(PORT_MIN + 19),
            "SIPRECD_MEDIA_RECEIVE_BUFFER": "0",  # the fake UDP ports have no real socket
            **self.environment,
            **environment,
        }
        self.config = load_config(None, env)
        self.reactor = MediaReactor()
        self.reactor.advance(START)
        self.controller, self.service = build_controller(self.reactor, self.config)
        self.stack = build_stack(self.reactor, self.config, self.controller)
        self.controller.attach(self.stack)
        self.udp = FakeUDP()
        self.stack.transports.udp = self.udp  # type: ignore[assignment]
        self.stack.core.local_addresses["UDP"] = (SRS_ADDRESS, 5060)

    # helpers

    def responses(self, since: int = 0) -> list[Response]:
        out = []
        for data, host, port in self.udp.sent[since:]:
            message = parse_message(data)
            if isinstance(message, Response):
                self.assertEqual((host, port), (SRC.host, SRC.port))
                out.append(message)
        return out

    def requests_sent(self, since: int = 0) -> list[tuple[Request, str, int]]:
        out = []
        for data, host, port in self.udp.sent[since:]:
            message = parse_message(data)
            if isinstance(message, Request):
                out.append((message, host, port))
        return out

    def sessions(self) -> dict[str, dict[str, Any]]:
        """Every session.json on disk, by Call-ID."""
        found = {}
        for path in glob.glob(os.path.join(self.recordings, "*", "*", "*", "*", "session.json")):
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            self.assertEqual(os.path.basename(os.path.dirname(path)), document["session_id"])
            found[document["call_id"]] = document
        return found

    def session(self, call: Call) -> dict[str, Any]:
        return self.sessions()[call.call_id]

    def session_dir(self, call: Call) -> str:
        document = self.session(call)
        return os.path.join(self.recordings, "2023", "11", "14", document["session_id"])

    def bound(self) -> list[int]:
        return sorted(self.reactor.udpPorts)

    def answer(self, response: Response) -> SessionDescription:
        self.assertEqual(response.headers.get("Content-Type"), "application/sdp")
        return parse(response.body)

    def assert_warning(self, response: Response, status: int, text: str) -> None:
        self.assertEqual(response.status, status)
        warning = response.headers.get("Warning")
        self.assertIsNotNone(warning, response.to_bytes().decode(errors="replace"))
        assert warning is not None
        self.assertTrue(warning.startswith('399 siprecd "'), warning)
        self.assertIn(text, warning)

    def assert_nothing_bound(self) -> None:
        self.assertEqual(self.bound(), [])
        self.assertEqual(self.controller.ports.in_use, 0)
        for port in self.reactor.every_udp_port:
            self.assertEqual(port.stopped, 1, f"port {port.port} stopped {port.stopped} times")

    def assert_quiet(self) -> None:
        """Every transaction timer runs out and nothing is left scheduled (habit 7)."""
        self.reactor.advance(64 * self.config.sip.t1 + 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(len(self.stack.layer), 0)

    def bye(self, call: Call, body: bytes = b"", content_type: str | None = None) -> None:
        response = call.request("BYE", body, content_type)
        self.assertEqual(response.status, 200)

    def m_summary(self, sdp: SessionDescription) -> list[tuple[Any, ...]]:
        """(media, port, formats, direction, label, rtcp port) per answer m-line."""
        return [
            (m.media, m.port, m.formats, m.own_direction, m.label, m.rtcp.port if m.rtcp else None)
            for m in sdp.media
        ]

    def stream_summary(self, document: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (s["label"], s["codec"], s["direction"], s["rtp_port"], s["sending_participants"], s["ended"])
            for s in document["streams"]
        ]


# --- SIPREC detection, plain calls ------------------------------------------------------------


class DetectionTests(ControllerTestCase):
    def offer(self) -> tuple[bytes, str]:
        return multipart(sdp_offer(audio(10000, "1")), None)

    def test_require_siprec(self) -> None:
        call = Call(self)
        response = call.setup(*self.offer(), contact="<sip:src@192.0.2.10:5062>")
        contact = response.headers.get("Contact")
        self.assertEqual(contact, f"<sip:srs@{SRS_ADDRESS}:5060>;+sip.srs")
        self.assertIs(self.session(call)["siprec"], True)

    def test_src_feature_tag_without_require(self) -> None:
        call = Call(self)
        response = call.setup(*self.offer(), require=False)
        # The SRS's own Contact: never the SRC's (+sip.src must not be echoed).
        self.assertEqual(response.headers.get_raw("Contact"), [f"<sip:srs@{SRS_ADDRESS}:5060>;+sip.srs"])
        self.assertIs(self.session(call)["siprec"], True)

    def test_plain_invite_refused(self) -> None:
        call = Call(self)
        response = call.invite(sdp_offer(audio(10000, None)), require=False, contact="<sip:a@192.0.2.10:5062>")
        self.assert_warning(response, 488, "not a SIPREC INVITE")
        self.assertIn("accept_plain_calls", response.headers.get("Warning") or "")
        call.ack()
        # The ACK matched the INVITE transaction: the 488 is not retransmitted (timer G stopped).
        sent = len(self.udp.sent)
        self.reactor.advance(4)
        self.assertEqual(len(self.udp.sent), sent)
        self.assertEqual(self.sessions(), {})
        self.assertEqual(self.bound(), [])
        self.assertEqual(self.controller.counters, {"plain_calls_refused": 1})
        self.assert_quiet()


class PlainCallTests(ControllerTestCase):
    environment = {"SIPRECD_SIPREC_ACCEPT_PLAIN_CALLS": "true"}

    def test_each_m_line_is_a_stream_without_metadata(self) -> None:
        call = Call(self)
        offer = sdp_offer(audio(10000, None, "sendrecv"), audio(10002, None, "sendrecv", formats="8"))
        response = call.setup(offer, require=False, contact="<sip:a@192.0.2.10:5062>")
        self.assertEqual(response.headers.get("Contact"), f"<sip:srs@{SRS_ADDRESS}:5060>;+sip.srs")
        self.assertEqual(
            self.m_summary(self.answer(response)),
            [
                ("audio", PORT_MIN, ["0", "101"], "recvonly", None, PORT_MIN + 1),
                ("audio", PORT_MIN + 2, ["8"], "recvonly", None, PORT_MIN + 3),
            ],
        )
        document = self.session(call)
        self.assertIs(document["siprec"], False)
        self.assertEqual(document["participants"], [])
        self.assertEqual(document["metadata_files"], [])
        self.assertEqual(
            self.stream_summary(document),
            [(None, "PCMU", "recvonly", PORT_MIN, [], False), (None, "PCMA", "recvonly", PORT_MIN + 2, [], False)],
        )
        self.bye(call)
        self.assertEqual(self.session(call)["state"], "ended")
        self.assert_nothing_bound()
        self.assert_quiet()


# --- the answer ------------------------------------------------------------------------------


class AnswerTests(ControllerTestCase):
    def test_answer_shape(self) -> None:
        offer = sdp_offer(
            audio(10000, "caller", "sendonly"),
            "m=video 10010 RTP/AVP 96\na=rtpmap:96 H264/90000\na=label:cam\na=sendonly\n",
            audio(10002, "callee", "sendrecv", formats="18 8 0"),
            audio(10004, "muted", "inactive", formats="8 101"),
        )
        call = Call(self)
        response = call.setup(*multipart(offer, None))
        answer = self.answer(response)
        self.assertEqual(answer.origin.username, "siprecd")
        self.assertEqual(answer.origin.sess_version, "1")
        self.assertEqual(answer.connection.address if answer.connection else None, SRS_ADDRESS)
        self.assertEqual(
            self.m_summary(answer),
            [
                ("audio", PORT_MIN, ["0", "101"], "recvonly", "caller", PORT_MIN + 1),
                ("video", 0, ["96"], None, None, None),
                ("audio", PORT_MIN + 2, ["0"], "recvonly", "callee", PORT_MIN + 3),
                ("audio", PORT_MIN + 4, ["8", "101"], "inactive", "muted", PORT_MIN + 5),
            ],
        )
        first = answer.media[0]
        self.assertEqual(first.attribute_values("rtpmap"), ["0 PCMU/8000", "101 telephone-event/8000"])
        self.assertEqual(first.attribute_values("fmtp"), ["101 0-16"])
        self.assertEqual([c.address for c in first.connections], [SRS_ADDRESS])
        # Even RTP, odd RTCP, inside the range, bound before the answer went out.
        self.assertEqual(self.bound(), list(range(PORT_MIN, PORT_MIN + 6)))
        for port in self.reactor.udpPorts.values():
            self.assertEqual(port.interface, "0.0.0.0")
        self.assertEqual(self.controller.ports.in_use, 3)
        document = self.session(call)
        self.assertEqual(
            [(s["label"], s["recorded"], s["codec"], s["direction"], s["reason"]) for s in document["streams"]],
            [
                ("caller", True, "PCMU", "recvonly", None),
                ("cam", False, None, "inactive", "video not recorded"),
                ("callee", True, "PCMU", "recvonly", None),
                ("muted", True, "PCMA", "inactive", None),
            ],
        )
        self.bye(call)
        self.assert_nothing_bound()
        self.assert_quiet()

    def test_codec_preference_is_configurable(self) -> None:
        self.start(SIPRECD_SIPREC_CODEC_PREFERENCE="G722 PCMA PCMU")
        call = Call(self)
        response = call.setup(sdp_offer(audio(10000, "1", formats="0 8 9 101")))
        self.assertEqual(self.answer(response).media[0].formats, ["9", "101"])
        self.assertEqual(self.session(call)["streams"][0]["codec"], "G722")

    def test_default_preference_is_the_srs_not_the_offer_order(self) -> None:
        call = Call(self)
        response = call.setup(sdp_offer(audio(10000, "1", formats="8 0")))
        self.assertEqual(self.answer(response).media[0].formats, ["0"])

    def test_codecs_without_a_decoder_cannot_be_preferred(self) -> None:
        # An SRS that cannot decode a codec must refuse it in the answer, never record noise.
        with self.assertRaises(ConfigError) as raised:
            self.start(SIPRECD_SIPREC_CODEC_PREFERENCE="PCMU H264")
        self.assertIn("no decoder for H264", raised.exception.errors[0])

    def test_media_address_advertised(self) -> None:
        self.start(SIPRECD_MEDIA_ADVERTISED_ADDRESS="203.0.113.5", SIPRECD_MEDIA_BIND_ADDRESS="127.0.0.1")
        call = Call(self)
        answer = self.answer(call.setup(sdp_offer(audio(10000, "a"))))
        self.assertEqual(answer.connection.address if answer.connection else None, "203.0.113.5")
        self.assertEqual([p.interface for p in self.reactor.udpPorts.values()], ["127.0.0.1", "127.0.0.1"])

    def test_unparseable_sdp(self) -> None:
        call = Call(self)
        response = call.invite(*multipart(b"v=0\r\nthis is not sdp\r\n", None))
        self.assert_warning(response, 488, "line 2: expected '<type>=<value>'")
        call.ack()
        self.assertEqual(self.sessions(), {})
        self.assert_nothing_bound()
        self.assertEqual(self.controller.sessions, {})
        self.assert_quiet()

    def test_no_acceptable_codec(self) -> None:
        call = Call(self)
        response = call.invite(*multipart(sdp_offer(audio(10000, "1", formats="18"), audio(10002, "2", formats="18")), None))
        self.assert_warning(response, 488, "no acceptable codec (offered: G729/8000)")
        call.ack()
        self.assertEqual(self.sessions(), {})
        self.assert_nothing_bound()
        self.assert_quiet()

    def test_broken_multipart(self) -> None:
        call = Call(self)
        response = call.invite(b"v=0\r\n", "multipart/mixed;boundary=missing")
        self.assertEqual((response.status, response.reason), (400, "multipart body has no delimiter line '--missing'"))
        self.assertEqual(self.sessions(), {})
        self.assertEqual(self.reactor.every_udp_port, [])

    def test_no_sdp_part(self) -> None:
        call = Call(self)
        response = call.invite(*multipart(None, rfc7865("complete.xml")))
        self.assert_warning(response, 488, "without an SDP offer")
        self.assertEqual(self.sessions(), {})


# --- ports and admission ---------------------------------------------------------------------


class AdmissionTests(ControllerTestCase):
    def test_max_sessions(self) -> None:
        self.start(SIPRECD_SIPREC_MAX_SESSIONS="1", SIPRECD_SIPREC_RETRY_AFTER="7")
        first = Call(self)
        first.setup(sdp_offer(audio(10000, "1")))
        second = Call(self)
        response = second.invite(sdp_offer(audio(10000, "1")))
        self.assertEqual((response.status, response.headers.get("Retry-After")), (503, "7"))
        second.ack()
        self.assertEqual(self.bound(), [PORT_MIN, PORT_MIN + 1])
        self.assertEqual(list(self.sessions()), [first.call_id])
        self.assertEqual(self.controller.counters, {"refused_max_sessions": 1})
        # Once the first ends, a new call is admitted again.
        self.bye(first)
        Call(self).setup(sdp_offer(audio(10000, "1")))

    def test_no_free_ports(self) -> None:
        self.start(SIPRECD_MEDIA_PORT_MAX=str(PORT_MIN + 3), SIPRECD_SIPREC_RETRY_AFTER="9")
        first = Call(self)
        first.setup(sdp_offer(audio(10000, "a")))
        # Two streams, one pair left: the pair allocated for the first m-line is given back.
        second = Call(self)
        response = second.invite(*multipart(sdp_offer(audio(10000, "a"), audio(10002, "b")), rfc7865("complete.xml")))
        self.assertEqual((response.status, response.headers.get("Retry-After")), (503, "9"))
        self.assertIn("no free RTP/RTCP port pair", response.reason)
        second.ack()
        self.assertEqual(self.bound(), [PORT_MIN, PORT_MIN + 1])
        self.assertEqual(self.controller.ports.in_use, 1)
        self.assertEqual(list(self.sessions()), [first.call_id])
        self.bye(first)
        self.assert_nothing_bound()
        self.assert_quiet()

    def test_ports_taken_by_another_process_are_skipped(self) -> None:
        self.reactor.taken = {PORT_MIN, PORT_MIN + 3}  # RTP of pair 1, RTCP of pair 2
        call = Call(self)
        answer = self.answer(call.setup(sdp_offer(audio(10000, "a"))))
        self.assertEqual(answer.media[0].port, PORT_MIN + 4)
        self.assertEqual(self.bound(), [PORT_MIN + 4, PORT_MIN + 5])
        # The RTP port bound for pair 2 before its RTCP failed was closed again.
        self.assertEqual([(p.port, p.stopped) for p in self.reactor.every_udp_port],
                         [(PORT_MIN + 2, 1), (PORT_MIN + 4, 0), (PORT_MIN + 5, 0)])

    def test_odd_port_min_rounds_up(self) -> None:
        from siprecd.media.ports import PortAllocator
        allocator = PortAllocator(self.reactor, "127.0.0.1", 40001, 40006)
        self.assertEqual(allocator.capacity, 2)
        pairs = [allocator.allocate(object(), object()) for _ in range(2)]  # type: ignore[arg-type]
        self.assertEqual([(p.rtp_port, p.rtcp_port) for p in pairs], [(40002, 40003), (40004, 40005)])

    def test_released_pair_is_not_reused_at_once(self) -> None:
        call = Call(self)
        call.setup(sdp_offer(audio(10000, "a")))
        self.bye(call)
        again = Call(self)
        self.assertEqual(self.answer(again.setup(sdp_offer(audio(10000, "a")))).media[0].port, PORT_MIN + 2)

    def test_disk_full(self) -> None:
        def full(self: SessionFiles) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        call = Call(self)
        with mock.patch.object(SessionFiles, "create", full):
            response = call.invite(*multipart(sdp_offer(audio(10000, "a"), audio(10002, "b")), rfc7865("complete.xml")))
        self.assertEqual(
            (response.status, response.reason, response.headers.get("Retry-After")),
            (503, "recording storage is full", "10"),
        )
        call.ack()
        self.assert_nothing_bound()
        self.assertEqual(len(self.reactor.every_udp_port), 4)
        self.assertEqual(self.controller.sessions, {})
        self.assertEqual(self.controller.counters, {"storage_errors": 1})
        self.assertFalse(os.path.exists(self.recordings) and os.listdir(self.recordings))
        self.assert_quiet()

    def test_disk_full_writing_session_json(self) -> None:
        def full(self: AtRest, directory: str, document: dict[str, Any]) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        call = Call(self)
        with mock.patch.object(AtRest, "write_session", full):
            response = call.invite(sdp_offer(audio(10000, "a")))
        self.assertEqual((response.status, response.reason), (503, "recording storage is full"))
        self.assert_nothing_bound()
        # The session directory was made, then removed: no directory without a session.json.
        self.assertEqual(glob.glob(os.path.join(self.recordings, "*", "*", "*", "*")), [])
        self.assertEqual(self.controller.counters, {"storage_errors": 1})

    def test_storage_not_writable(self) -> None:
        def denied(self: SessionFiles) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        call = Call(self)
        with mock.patch.object(SessionFiles, "create", denied):
            response = call.invite(sdp_offer(audio(10000, "a")))
        self.assertEqual((response.status, response.reason), (503, "recording storage is not writable"))
        self.assert_nothing_bound()

    def test_session_directory_and_times(self) -> None:
        call = Call(self)
        call.setup(*multipart(sdp_offer(audio(10000, "a")), None))
        directory = self.session_dir(call)
        self.assertTrue(os.path.isdir(directory), directory)
        self.reactor.advance(65.25)
        self.bye(call)
        document = self.session(call)
        self.assertEqual((document["started_at"], document["ended_at"]), (START_ISO, "2023-11-14T22:14:25.250Z"))
        self.assertEqual(document["src"], {"address": "192.0.2.10", "port": 5062, "transport": "UDP"})
        # Atomic rewrites leave no temporary file behind.
        self.assertEqual(
            sorted(os.listdir(directory)),
            ["sdp-0001-offer.sdp", "sdp-0002-answer.sdp", "session.json", "stream-1-a.wav"],
        )


# --- the corpus through the controller -------------------------------------------------------

CISCO_P1 = "kQNhKFdEEeeJ99D/VsPGWA=="
CISCO_P2 = "kQNhKFdEEeeJ+ND/VsPGWA=="

# name -> (answer m-lines as (port offset, formats, direction, label), participants as
# (id, name, aor), streams as (label, codec, sending_participants))
CORPUS_EXPECTED: dict[str, tuple[list[tuple[int, list[str], str, str | None]], list[tuple[str, str | None, str | None]], list[tuple[str | None, str, list[str]]]]] = {
    "acme-siprec-offer.txt": (
        [(0, ["0"], "recvonly", "16777227"), (2, ["0"], "recvonly", "16777228")],
        [("fSD3PFErSjNTHLDiXCELjw==", "9000", "sip:9000@192.168.50.102"),
         ("EbccNyypRlFYXTm4iw8hxw==", "1002", "sip:1002@192.168.50.10")],
        [("16777227", "PCMU", ["fSD3PFErSjNTHLDiXCELjw=="]), ("16777228", "PCMU", ["EbccNyypRlFYXTm4iw8hxw=="])],
    ),
    "broadworks-offer-2.txt": (
        [(0, ["8", "97"], "recvonly", "10"), (2, ["8", "97"], "recvonly", "20")],
        [("9a2de728ba0bc348db1e", None, "sip:9878942259@212.188.68.145"),
         ("abcdef12345678901234", None, "sip:ASBCE@asbce.com")],
        [("10", "PCMA", ["9a2de728ba0bc348db1e"]), ("20", "PCMA", ["abcdef12345678901234"])],
    ),
    # Metadata part first, its markup lost upstream: stored and parsed, but nobody in it.
    "broadworks-offer.txt": (
        [(0, ["0", "101"], "recvonly", "1")],
        [],
        [("1", "PCMU", [])],
    ),
    "cisco-siprec-offer.txt": (
        [(0, ["0", "101"], "recvonly", "1"), (2, ["0", "101"], "recvonly", "2")],
        [(CISCO_P1, None, "sip:7301@35.162.237.204"), (CISCO_P2, "7300", "sip:7300@35.162.237.204")],
        [("1", "PCMU", [CISCO_P1]), ("2", "PCMU", [CISCO_P2])],
    ),
    "inactive-sdp-offer.txt": (
        [(0, ["0", "101"], "inactive", "1"), (2, ["0", "101"], "inactive", "2")],
        [("GZBIusaXEeuxxa1dFIaIyA==", None, "sip:0733165805@192.168.40.34"),
         ("GZBIusaXEeuxxq1dFIaIyA==", None, "sip:+972546136443@192.168.10.140")],
        [("1", "PCMU", []), ("2", "PCMU", [])],
    ),
    "non-siprec-payload.txt": (
        [(0, ["0", "101"], "recvonly", "1")],
        [],
        [("1", "PCMU", [])],
    ),
    "procomm-siprec-offer.txt": (
        [(0, ["8"], "recvonly", "a_leg"), (2, ["8"], "recvonly", "b_leg")],
        [("Ye5S5pU+SAG2JY4oG7M4Cw==", "016190200", "sip:016190200@87.252.209.116"),
         ("QDhKextjTa+F1TzXuvHZHw==", "Speechpath-Main-Line 016190619", "Extension-016190619@speechpath.ie")],
        [("a_leg", "PCMA", ["Ye5S5pU+SAG2JY4oG7M4Cw=="]), ("b_leg", "PCMA", ["QDhKextjTa+F1TzXuvHZHw=="])],
    ),
    # Streams map to participants through participantstreamassoc, not by order: label 1 is
    # sent by the second participant.
    "sonus-siprec-offer.txt": (
        [(0, ["0"], "recvonly", "1"), (2, ["0"], "recvonly", "2")],
        [("MTQ3YzA3YzItNjdkNy0xMA==", "Extension 8500", "2249888500@172.16.198.55"),
         ("MTQ3YzA3YzMtNjdkNy0xMA==", None, "2249888012@172.16.195.72")],
        [("1", "PCMU", ["MTQ3YzA3YzMtNjdkNy0xMA=="]), ("2", "PCMU", ["MTQ3YzA3YzItNjdkNy0xMA=="])],
    ),
}
for _name, _display in (("connectel-offer.txt", "test_user;lang=en-US;id=22"),
                        ("connectel-offer2.txt", "test_user;lang=en-US"), ("connectel-offer3.txt", "test_user")):
    CORPUS_EXPECTED[_name] = (
        # m-line 2 offers "8 0 101": the SRS's preference (PCMU first) decides.
        [(0, ["0", "101"], "recvonly", "1"), (2, ["0", "101"], "recvonly", "2")],
        [("WEWTz80cS1Cqdyepmu3STQ==", _display, "sip:0771121212@52.57.92.239"),
         ("21Isz6eFRYuiDN0vEkVXQQ==", None, "sip:0760516936@sip-cust1.connectel.io")],
        [("1", "PCMU", []), ("2", "PCMU", [])],
    )


class CorpusTests(ControllerTestCase):
    environment = {"SIPRECD_MEDIA_PORT_MAX": str(PORT_MIN + 999)}

    def run_offer(self, body: bytes, content_type: str) -> tuple[Call, Response, dict[str, Any]]:
        call = Call(self)
        response = call.setup(body, content_type)
        self.assertEqual(response.headers.get("Contact"), f"<sip:srs@{SRS_ADDRESS}:5060>;+sip.srs")
        return call, response, self.session(call)

    def check(self, name: str) -> None:
        mlines, participants, streams = CORPUS_EXPECTED[name]
        body, content_type = corpus_offer(name)
        # Pairs are handed out in turn through the range (a released one is not reused at once).
        base = PORT_MIN + 2 * self.pairs_used
        call, response, document = self.run_offer(body, content_type)
        self.pairs_used += len(mlines)
        self.assertEqual(
            [(m.port, m.formats, m.own_direction, m.label) for m in self.answer(response).media],
            [(base + offset, formats, direction, label) for offset, formats, direction, label in mlines],
            name,
        )
        self.assertEqual([(p["id"], p["name"], p["aor"]) for p in document["participants"]], participants, name)
        self.assertEqual(
            [(s["label"], s["codec"], s["sending_participants"]) for s in document["streams"]], streams, name
        )
        self.bye(call)
        ended = self.session(call)
        self.assertEqual(ended["state"], "ended", name)
        self.assertEqual(ended["participants"], document["participants"], name)

    def test_every_corpus_offer(self) -> None:
        names = sorted(p.name for p in CORPUS.glob("*.txt") if not p.name.startswith("sample-"))
        self.assertEqual(sorted(CORPUS_EXPECTED), names)
        self.pairs_used = 0
        for name in names:
            self.check(name)
        self.assert_nothing_bound()
        self.assertEqual(self.controller.finished, len(names))
        self.assert_quiet()

    def test_corpus_metadata_stored_verbatim(self) -> None:
        for name in sorted(CORPUS_EXPECTED):
            body, content_type = corpus_offer(name)
            call, _, document = self.run_offer(body, content_type)
            directory = self.session_dir(call)
            if content_type == "application/sdp":
                self.assertEqual(document["metadata_files"], [])
                self.bye(call)
                continue
            boundary = content_type.split("boundary=")[1].encode()
            # The metadata part's body: between the blank line after its headers and the CRLF
            # before the next delimiter (RFC 2046 §5.1.1).
            # procomm has no close delimiter: its last part runs to the end of the body.
            chunks = body.split(b"--" + boundary)
            expected = [
                c.split(b"\r\n\r\n", 1)[1][: -2 if i < len(chunks) - 1 else None]
                for i, c in enumerate(chunks)
                if i and b"recording-session" in c.split(b"\r\n\r\n", 1)[0]
            ]
            self.assertEqual(len(expected), 1, name)
            self.assertEqual(document["metadata_files"], ["metadata-0001.xml"], name)
            self.assertEqual(Path(directory, "metadata-0001.xml").read_bytes(), expected[0], name)
            self.assertTrue(document["metadata_versions"][0]["parsed"], name)
            self.bye(call)

    def test_inactive_first_offer_is_paused(self) -> None:
        _, _, document = self.run_offer(*corpus_offer("inactive-sdp-offer.txt"))
        self.assertEqual(document["state"], "paused")

    def test_sample_sdps(self) -> None:
        # (file, SDP index) -> (formats, direction, label) of the single answered m-line
        expected = {
            ("sample-sdps.txt", 0): (["0"], "recvonly", "1"),
            ("sample-sdps.txt", 1): (["0"], "recvonly", "2"),
            ("sample-sdp2.txt", 0): (["0", "101"], "recvonly", "1"),  # ICE, b=, a=rtcp with address
            ("sample-sdp2.txt", 1): (["0"], "recvonly", "2"),
            ("sample-sdp3.txt", 0): (["8", "101"], "recvonly", None),  # no label, no direction
            ("sample-sdp3.txt", 1): (["8", "101"], "inactive", None),  # the offerer will not send
        }
        seen = {}
        for name in ("sample-sdps.txt", "sample-sdp2.txt", "sample-sdp3.txt"):
            for index, sdp in enumerate(corpus_sdps(name)):
                _, response, document = self.run_offer(sdp, "application/sdp")
                (m,) = self.answer(response).media
                seen[(name, index)] = (m.formats, m.own_direction, m.label)
                self.assertEqual(document["streams"][0]["label"], m.label)
        self.assertEqual(seen, expected)

    def test_rfc7865_complete(self) -> None:
        call, response, document = self.run_offer(*multipart(rfc7865_sdp(), rfc7865("complete.xml")))
        self.assertEqual([m.label for m in self.answer(response).media], list(RFC7865_LABELS))
        self.assertEqual(
            [(p["id"], p["name"], p["aor"], p["send_labels"]) for p in document["participants"]],
            [(ALICE, "Alice", "sip:alice@atlanta.com", ["97", "96"]), (BOB, "Bob", "sip:bob@biloxy.com", ["98", "99"])],
        )
        self.assertEqual(
            [(s["label"], s["sending_participants"]) for s in document["streams"]],
            [("96", [ALICE]), ("97", [ALICE]), ("98", [BOB]), ("99", [BOB])],
        )
        self.assertEqual(document["metadata"]["groups"][0]["group_id"], "7+OTCyoxTmqmqyA/1weDAg==")

    def test_cisco_session_json_exact(self) -> None:
        body, content_type = corpus_offer("cisco-siprec-offer.txt")
        call = Call(self, call_id="cisco-1@172.31.93.236")
        response = call.setup(body, content_type)
        answer_sdp = response.body
        origin = parse(answer_sdp).origin
        self.assertEqual(
            answer_sdp.decode(),
            "\r\n".join([
                "v=0",
                f"o=siprecd {origin.sess_id} 1 IN IP4 {SRS_ADDRESS}",
                "s=-",
                f"c=IN IP4 {SRS_ADDRESS}",
                "t=0 0",
                f"m=audio {PORT_MIN} RTP/AVP 0 101",
                f"c=IN IP4 {SRS_ADDRESS}",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                f"a=rtcp:{PORT_MIN + 1}",
                "a=label:1",
                "a=recvonly",
                f"m=audio {PORT_MIN + 2} RTP/AVP 0 101",
                f"c=IN IP4 {SRS_ADDRESS}",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                f"a=rtcp:{PORT_MIN + 3}",
                "a=label:2",
                "a=recvonly",
                "",
            ]),
        )
        self.reactor.advance(30)
        self.bye(call)
        document = self.session(call)
        session_id = document["session_id"]
        self.assertEqual(str(uuid.UUID(session_id)), session_id)

        def stream(index: int, label: str, sender: str) -> dict[str, Any]:
            return {
                "label": label, "index": index, "media_type": "audio", "recorded": True, "reason": None,
                "codec": "PCMU", "clock_rate": 8000, "channels": 1, "payload_type": 0,
                "telephone_event_payload_type": 101, "direction": "recvonly", "offered_direction": "sendonly",
                "stream_security": {"method": None, "suite": None},
                "on_hold": False, "rtp_port": PORT_MIN + 2 * index, "rtcp_port": PORT_MIN + 2 * index + 1,
                "sending_participants": [sender], "file": f"stream-{index + 1}-{label}.wav", "events": [],
                "packets_received": 0, "bytes_received": 0, "ended": True,
            }

        def participant(pid: str, name: str | None, number: str, send: str, label: str, recv: str) -> dict[str, Any]:
            return {
                "id": pid, "name": name,
                "names": [{"text": name, "lang": "en"}] if name else [],
                "aor": f"sip:{number}@35.162.237.204", "aors": [f"sip:{number}@35.162.237.204"],
                "numbers": [number], "role": None,
                "associate_time": "2017-06-23T12:16:06.040Z", "disassociate_time": None,
                "sessions": [{"session_id": "kQNhKFdEEeeJ9tD/VsPGWA==",
                              "associate_time": "2017-06-23T12:16:06.040Z", "disassociate_time": None}],
                "send": [send], "send_labels": [label], "recv": [recv],
            }

        s1, s2 = "kQOH5VdEEeeJ/ND/VsPGWA==", "kQOH5VdEEeeJ/dD/VsPGWA=="
        metadata = document.pop("metadata")
        for index, item in enumerate(document["streams"]):
            recording = item.pop("recording")
            self.assertEqual(
                (recording["file"], recording["format"], recording["sample_rate"], recording["error"]),
                (f"stream-{index + 1}-{index + 1}.wav", "wav-pcm16", 8000, None),
            )
            self.assertEqual(item.pop("reception")["datagrams"], 0)
        self.assertEqual(
            document.pop("mix"),
            {
                "file": "mix-stereo.wav", "mode": "stereo", "sample_rate": 8000, "error": None,
                "channels": [
                    {"channel": "left", "label": "1", "stream_file": "stream-1-1.wav", "sending_participants": [CISCO_P1]},
                    {"channel": "right", "label": "2", "stream_file": "stream-2-2.wav", "sending_participants": [CISCO_P2]},
                ],
            },
        )
        self.assertEqual(
            document,
            {
                "session_id": session_id,
                "call_id": "cisco-1@172.31.93.236",
                "state": "ended",
                "started_at": START_ISO,
                "ended_at": "2023-11-14T22:13:50.000Z",
                "end_reason": "BYE from the SRC",
                "siprec": True,
                "src": {"address": "192.0.2.10", "port": 5062, "transport": "UDP"},
                "sip": {
                    "request_uri": f"sip:srs@{SRS_ADDRESS}:5060",
                    "from": f"<sip:src@example.com>;tag={call.from_tag}",
                    "to": "<sip:srs@example.net>",
                    "contact": "<sip:src@192.0.2.10:5062>;+sip.src",
                    "user_agent": "test-src",
                },
                "participants": [
                    participant(CISCO_P1, None, "7301", s1, "1", s2),
                    participant(CISCO_P2, "7300", "7300", s2, "2", s1),
                ],
                "streams": [stream(0, "1", CISCO_P1), stream(1, "2", CISCO_P2)],
                "metadata_files": ["metadata-0001.xml"],
                "metadata_versions": [
                    {"index": 1, "file": "metadata-0001.xml", "received_at": START_ISO, "method": "INVITE",
                     "content_type": "application/rs-metadata+xml", "parsed": True, "error": None},
                ],
                "sdp_files": ["sdp-0001-offer.sdp", "sdp-0002-answer.sdp"],
                "srs": {"software": "siprecd", "version": document["srs"]["version"]},
            },
        )
        self.assertEqual(
            (metadata["datamode"], metadata["senders_by_label"], [s["session_id"] for s in metadata["sessions"]]),
            ("complete", {"1": [CISCO_P1], "2": [CISCO_P2]}, ["kQNhKFdEEeeJ9tD/VsPGWA=="]),
        )
        directory = self.session_dir(call)
        sdp_part = body.split(b"--uniqueBoundary")[1].split(b"\r\n\r\n", 1)[1][:-2]
        self.assertEqual(Path(directory, "sdp-0001-offer.sdp").read_bytes(), sdp_part)
        self.assertEqual(Path(directory, "sdp-0002-answer.sdp").read_bytes(), answer_sdp)
        self.assert_nothing_bound()
        self.assert_quiet()


# --- mid-dialog ------------------------------------------------------------------------------


class MidDialogTests(ControllerTestCase):
    def start_call(self) -> tuple[Call, list[int]]:
        call = Call(self)
        response = call.setup(*multipart(rfc7865_sdp(), rfc7865("complete.xml")))
        ports = [m.port for m in self.answer(response).media]
        self.assertEqual(ports, [PORT_MIN, PORT_MIN + 2, PORT_MIN + 4, PORT_MIN + 6])
        return call, ports

    def directions(self, response: Response) -> list[tuple[int, str | None, str | None]]:
        return [(m.port, m.own_direction, m.label) for m in self.answer(response).media]

    def test_hold_and_resume_with_inactive(self) -> None:
        call, ports = self.start_call()
        self.assertEqual(self.session(call)["state"], "active")
        held = call.reinvite(*multipart(rfc7865_sdp("inactive", version=2), rfc7865("partial-hold.xml")))
        self.assertEqual(held.status, 200)
        self.assertEqual(self.directions(held), [(p, "inactive", lbl) for p, lbl in zip(ports, RFC7865_LABELS)])
        self.assertEqual(self.answer(held).origin.sess_version, "2")
        document = self.session(call)
        self.assertEqual(document["state"], "paused")
        self.assertEqual([s["direction"] for s in document["streams"]], ["inactive"] * 4)
        # The partial update (RFC 7865 §8 hold example): Alice no longer sends.
        self.assertEqual(
            [(s["label"], s["sending_participants"]) for s in document["streams"]],
            [("96", []), ("97", []), ("98", [BOB]), ("99", [BOB])],
        )
        self.assertEqual(document["metadata_files"], ["metadata-0001.xml", "metadata-0002.xml"])
        resumed = call.reinvite(*multipart(rfc7865_sdp("sendonly", version=3), rfc7865("partial-resume.xml")))
        self.assertEqual(self.directions(resumed), [(p, "recvonly", lbl) for p, lbl in zip(ports, RFC7865_LABELS)])
        self.assertEqual(self.answer(resumed).origin.sess_version, "3")
        document = self.session(call)
        self.assertEqual(document["state"], "active")
        self.assertEqual(
            [(s["label"], s["sending_participants"]) for s in document["streams"]],
            [("96", [ALICE]), ("97", [ALICE]), ("98", [BOB]), ("99", [BOB])],
        )
        self.assertEqual(self.bound(), list(range(PORT_MIN, PORT_MIN + 8)))
        self.assertEqual(len(self.reactor.every_udp_port), 8)

    def test_hold_with_zero_connection_address(self) -> None:
        call, ports = self.start_call()
        held = call.reinvite(sdp_offer(*(audio(10000 + 2 * i, lbl, "sendonly") for i, lbl in enumerate(RFC7865_LABELS)), session_c="0.0.0.0"))
        self.assertEqual(held.status, 200)
        self.assertEqual([m.port for m in self.answer(held).media], ports)
        document = self.session(call)
        self.assertEqual(document["state"], "paused")
        self.assertEqual([s["on_hold"] for s in document["streams"]], [True] * 4)
        resumed = call.reinvite(rfc7865_sdp())
        self.assertEqual([m.port for m in self.answer(resumed).media], ports)
        self.assertEqual(self.session(call)["state"], "active")

    def test_partial_hold_is_paused_while_one_stream_flows(self) -> None:
        call, ports = self.start_call()
        offer = sdp_offer(audio(10000, "96", "inactive"), audio(10002, "97", "inactive"),
                          audio(10004, "98", "sendonly"), audio(10006, "99", "inactive"))
        self.assertEqual([d for _, d, _ in self.directions(call.reinvite(offer))], ["inactive", "inactive", "recvonly", "inactive"])
        self.assertEqual(self.session(call)["state"], "active")

    def test_session_refresh_same_offer(self) -> None:
        call, ports = self.start_call()
        for version in (1, 2):
            response = call.reinvite(rfc7865_sdp(version=version))
            self.assertEqual(self.directions(response), [(p, "recvonly", lbl) for p, lbl in zip(ports, RFC7865_LABELS)])
        self.assertEqual(self.session(call)["metadata_files"], ["metadata-0001.xml"])
        self.assertEqual(len(self.reactor.every_udp_port), 8)

    def test_reinvite_without_sdp(self) -> None:
        call, ports = self.start_call()
        first = self.answer(call.reinvite(rfc7865_sdp(version=2)))
        response = call.reinvite()
        self.assertEqual(response.status, 200)
        current = self.answer(response)
        # Our current SDP, unchanged, as the offer (same o= version: RFC 3264 §8).
        self.assertEqual(current, first)
        self.assertEqual(current.origin.sess_version, "2")

    def test_reinvite_metadata_only(self) -> None:
        call, ports = self.start_call()
        body, content_type = multipart(None, rfc7865("partial-hold.xml"))
        response = call.reinvite(body, content_type)
        self.assertEqual(response.status, 200)
        self.assertEqual([m.port for m in self.answer(response).media], ports)
        document = self.session(call)
        self.assertEqual(document["metadata_files"], ["metadata-0001.xml", "metadata-0002.xml"])
        self.assertEqual(document["streams"][0]["sending_participants"], [])

    def test_add_and_remove_m_lines(self) -> None:
        call = Call(self)
        response = call.setup(sdp_offer(audio(10000, "a"), audio(10002, "b")))
        self.assertEqual([m.port for m in self.answer(response).media], [PORT_MIN, PORT_MIN + 2])
        # A third labelled m-line: a new pair; a and b keep theirs.
        added = call.reinvite(sdp_offer(audio(10000, "a"), audio(10002, "b"), audio(10004, "c"), version=2))
        self.assertEqual(self.directions(added), [(PORT_MIN, "recvonly", "a"), (PORT_MIN + 2, "recvonly", "b"), (PORT_MIN + 4, "recvonly", "c")])
        self.assertEqual(self.bound(), list(range(PORT_MIN, PORT_MIN + 6)))
        # b disabled with port 0: its pair is released; a and c keep theirs.
        removed = call.reinvite(sdp_offer(audio(10000, "a"), audio(0, "b"), audio(10004, "c"), version=3))
        self.assertEqual(
            [(m.port, m.label) for m in self.answer(removed).media],
            [(PORT_MIN, "a"), (0, None), (PORT_MIN + 4, "c")],
        )
        self.assertEqual(self.bound(), [PORT_MIN, PORT_MIN + 1, PORT_MIN + 4, PORT_MIN + 5])
        document = self.session(call)
        self.assertEqual(
            [(s["label"], s["recorded"], s["rtp_port"], s["ended"]) for s in document["streams"]],
            [("a", True, PORT_MIN, False), ("b", False, None, False), ("c", True, PORT_MIN + 4, False),
             ("b", True, PORT_MIN + 2, True)],
        )
        # c dropped from the offer altogether (m-lines may not shrink in SIP, but SRCs do it):
        # its pair goes too, a keeps its port.
        shrunk = call.reinvite(sdp_offer(audio(10000, "a"), version=4))
        self.assertEqual([(m.port, m.label) for m in self.answer(shrunk).media], [(PORT_MIN, "a")])
        self.assertEqual(self.bound(), [PORT_MIN, PORT_MIN + 1])
        # b comes back: a fresh pair (the old one may still receive late packets elsewhere).
        back = call.reinvite(sdp_offer(audio(10000, "a"), audio(10002, "b"), version=5))
        self.assertEqual([m.port for m in self.answer(back).media], [PORT_MIN, PORT_MIN + 6])
        self.bye(call)
        self.assert_nothing_bound()
        self.assert_quiet()

    def test_duplicate_labels_keep_their_ports(self) -> None:
        call = Call(self)
        offer = sdp_offer(audio(10000, "1"), audio(10002, "1"), audio(10004, None))
        self.assertEqual([m.port for m in self.answer(call.setup(offer)).media], [PORT_MIN, PORT_MIN + 2, PORT_MIN + 4])
        for version in (2, 3):
            response = call.reinvite(sdp_offer(audio(10000, "1"), audio(10002, "1"), audio(10004, None), version=version))
            self.assertEqual([m.port for m in self.answer(response).media], [PORT_MIN, PORT_MIN + 2, PORT_MIN + 4])
        self.assertEqual(len(self.reactor.every_udp_port), 6)

    def test_reinvite_with_bad_sdp_leaves_session_unchanged(self) -> None:
        call, ports = self.start_call()
        before = self.session(call)
        answer_before = self.answer(call.reinvite()).origin.sess_version
        for offer in (b"v=0\r\nnot sdp\r\n", sdp_offer(audio(10000, "96", formats="18"), version=2)):
            response = call.reinvite(offer, "application/sdp")
            self.assertEqual(response.status, 488)
            self.assertIsNotNone(response.headers.get("Warning"))
            self.assertEqual(self.session(call), before)
            self.assertEqual(self.bound(), list(range(PORT_MIN, PORT_MIN + 8)))
        # A bad re-offer that would add a stream allocates nothing that survives it.
        bad = sdp_offer(*(audio(10000 + 2 * i, lbl) for i, lbl in enumerate(RFC7865_LABELS)), audio(10010, "new"),
                        audio(10012, "x", formats="18"), version=2) + b"m=audio 1 RTP/AVP\r\n"
        self.assertEqual(call.reinvite(bad, "application/sdp").status, 488)
        self.assertEqual(self.bound(), list(range(PORT_MIN, PORT_MIN + 8)))
        response = call.reinvite()
        self.assertEqual([m.port for m in self.answer(response).media], ports)
        self.assertEqual(self.answer(response).origin.sess_version, answer_before)

    def test_failed_reoffer_after_allocation_releases_new_pairs(self) -> None:
        self.start(SIPRECD_MEDIA_PORT_MAX=str(PORT_MIN + 5))  # three pairs
        call = Call(self)
        call.setup(sdp_offer(audio(10000, "a"), audio(10002, "b")))
        response = call.reinvite(sdp_offer(audio(10000, "a"), audio(10002, "b"), audio(10004, "c"), audio(10006, "d"), version=2))
        self.assertEqual((response.status, response.headers.get("Retry-After")), (503, "10"))
        self.assertEqual(self.bound(), [PORT_MIN, PORT_MIN + 1, PORT_MIN + 2, PORT_MIN + 3])
        self.assertEqual(self.controller.ports.in_use, 2)
        self.assertEqual(self.session(call)["state"], "active")
        self.assertEqual([m.port for m in self.answer(call.reinvite()).media], [PORT_MIN, PORT_MIN + 2])

    def test_reinvite_bad_sdp_with_metadata_keeps_the_metadata(self) -> None:
        call, _ = self.start_call()
        response = call.reinvite(*multipart(b"v=0\r\nnot sdp\r\n", rfc7865("partial-hold.xml")))
        self.assertEqual(response.status, 488)
        document = self.session(call)
        # Every metadata version received is stored, and session.json says so.
        self.assertEqual(document["metadata_files"], ["metadata-0001.xml", "metadata-0002.xml"])
        self.assertTrue(os.path.exists(os.path.join(self.session_dir(call), "metadata-0002.xml")))
        self.assertEqual(document["streams"][0]["direction"], "recvonly")

    def test_update_with_metadata_only(self) -> None:
        call, ports = self.start_call()
        response = call.request("UPDATE", rfc7865("partial-hold.xml"), "application/rs-metadata+xml")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"")
        self.assertIsNone(response.headers.get("Content-Type"))
        document = self.session(call)
        self.assertEqual(document["metadata_files"], ["metadata-0001.xml", "metadata-0002.xml"])
        self.assertEqual(
            [v["method"] for v in document["metadata_versions"]], ["INVITE", "UPDATE"]
        )
        self.assertEqual(
            Path(self.session_dir(call), "metadata-0002.xml").read_bytes(), rfc7865("partial-hold.xml")
        )
        self.assertEqual(
            [(s["label"], s["sending_participants"]) for s in document["streams"]],
            [("96", []), ("97", []), ("98", [BOB]), ("99", [BOB])],
        )
        self.assertEqual(self.bound(), list(range(PORT_MIN, PORT_MIN + 8)))
        # rs-metadata without +xml, multipart: both accepted.
        body, content_type = multipart(None, rfc7865("partial-resume.xml"), metadata_type="application/rs-metadata")
        self.assertEqual(call.request("UPDATE", body, content_type).status, 200)
        self.assertEqual(self.session(call)["streams"][0]["sending_participants"], [ALICE])

    def test_update_with_sdp(self) -> None:
        call, ports = self.start_call()
        response = call.request("UPDATE", rfc7865_sdp("inactive", version=2), "application/sdp")
        self.assertEqual(response.status, 200)
        self.assertEqual([(m.port, m.own_direction) for m in self.answer(response).media], [(p, "inactive") for p in ports])
        self.assertEqual(self.session(call)["state"], "paused")

    def test_info(self) -> None:
        call, _ = self.start_call()
        self.assertEqual(call.request("INFO").status, 200)
        self.assertEqual(call.request("INFO", b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay").status, 200)
        self.assertEqual(self.session(call)["metadata_files"], ["metadata-0001.xml"])
        self.assertEqual(call.request("INFO", rfc7865("partial-hold.xml"), "application/rs-metadata+xml").status, 200)
        self.assertEqual(self.session(call)["metadata_files"], ["metadata-0001.xml", "metadata-0002.xml"])

    def test_bye_with_metadata(self) -> None:
        call, _ = self.start_call()
        leave = (
            b"<?xml version='1.0' encoding='UTF-8'?>\r\n"
            b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>"
            b"<datamode>partial</datamode>"
            b"<participantsessionassoc participant_id='srfBElmCRp2QB23b7Mpk0w==' session_id='hVpd7YQgRW2nD22h7q60JQ=='>"
            b"<disassociate-time>2010-12-16T23:45:00Z</disassociate-time>"
            b"</participantsessionassoc></recording>"
        )
        self.reactor.advance(5)
        self.bye(call, leave, "application/rs-metadata+xml")
        document = self.session(call)
        self.assertEqual(document["state"], "ended")
        self.assertEqual(document["end_reason"], "BYE from the SRC")
        self.assertEqual(document["metadata_files"], ["metadata-0001.xml", "metadata-0002.xml"])
        self.assertEqual(document["metadata_versions"][1]["method"], "BYE")
        self.assertEqual(document["metadata_versions"][1]["received_at"], "2023-11-14T22:13:25.000Z")
        self.assertEqual(
            [(p["id"], p["associate_time"], p["disassociate_time"]) for p in document["participants"]],
            [(ALICE, "2010-12-16T23:41:07Z", "2010-12-16T23:45:00Z"), (BOB, "2010-12-16T23:41:07Z", None)],
        )
        self.assertEqual(Path(self.session_dir(call), "metadata-0002.xml").read_bytes(), leave)
        self.assert_nothing_bound()
        self.assert_quiet()

    def test_session_json_is_final_when_the_bye_is_answered(self) -> None:
        call, _ = self.start_call()
        seen: list[tuple[int, str, int]] = []
        send = self.udp.send

        def spy(data: bytes, host: str, port: int) -> None:
            message = parse_message(data)
            if isinstance(message, Response) and message.cseq.method == "BYE":
                document = self.session(call)
                seen.append((message.status, document["state"], len(document["metadata_files"])))
            send(data, host, port)

        self.udp.send = spy  # type: ignore[method-assign]
        self.bye(call, rfc7865("partial-hold.xml"), "application/rs-metadata+xml")
        self.assertEqual(seen, [(200, "ended", 2)])
        self.assertEqual(self.controller.finished, 1)
        self.assertEqual(self.session(call)["end_reason"], "BYE from the SRC")

    def test_bye_with_broken_multipart_body(self) -> None:
        call, _ = self.start_call()
        self.bye(call, b"no delimiter here\r\n", "multipart/mixed;boundary=nothere")
        document = self.session(call)
        self.assertEqual((document["state"], document["metadata_files"]), ("ended", ["metadata-0001.xml"]))
        self.assertEqual(self.controller.counters, {"bad_bodies": 1})
        self.assert_nothing_bound()

    def test_bye_with_multipart_metadata(self) -> None:
        call, _ = self.start_call()
        self.bye(call, *multipart(None, rfc7865("partial-hold.xml")))
        document = self.session(call)
        self.assertEqual((document["state"], len(document["metadata_files"])), ("ended", 2))
        self.assertEqual(document["streams"][0]["sending_participants"], [])

    def test_srs_hangs_up(self) -> None:
        call, _ = self.start_call()
        other = Call(self)
        other.setup(sdp_offer(audio(10000, "x")))
        before = len(self.udp.sent)
        self.service.drain_timeout = 0  # no grace: every session is hung up at once
        self.service.startService()
        self.service.stopService()  # ControllerService: drain(0) hangs up every session
        sent = self.requests_sent(before)
        self.assertEqual([(r.method, host, port) for r, host, port in sent], [("BYE", "192.0.2.10", 5062)] * 2)
        self.assertEqual({r.call_id for r, _, _ in sent}, {call.call_id, other.call_id})
        for request, _, _ in sent:
            self.assertEqual(request.uri.host, "192.0.2.10")  # the SRC's Contact
            self.assertIsNone(request.headers.get("Require"))
            self.assertEqual(request.to.tag, call.from_tag if request.call_id == call.call_id else other.from_tag)
        for document in self.sessions().values():
            self.assertEqual((document["state"], document["end_reason"]), ("ended", "SRS shutting down"))
            self.assertIsNotNone(document["ended_at"])
        self.assert_nothing_bound()
        self.assertEqual(self.controller.sessions, {})
        # The SRC answers the BYEs; then every timer is done.
        for request, _, _ in sent:
            ok = (
                f"SIP/2.0 200 OK\r\nVia: {request.headers.get('Via')}\r\nFrom: {request.headers.get('From')}\r\n"
                f"To: {request.headers.get('To')}\r\nCall-ID: {request.call_id}\r\nCSeq: {request.headers.get('CSeq')}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            self.stack.receive(ok, SRC)
        self.assert_quiet()
        # A late BYE from the SRC finds no dialog.
        self.assertEqual(call.request("BYE").status, 481)

    def test_drain_lets_calls_finish_and_refuses_new_ones(self) -> None:
        call, _ = self.start_call()
        self.service.drain_timeout = 10
        self.service.startService()
        stopped = self.service.stopService()
        fired: list[object] = []
        stopped.addCallback(fired.append)
        self.reactor.advance(5)
        self.assertEqual(fired, [])
        refused = Call(self).invite(sdp_offer(audio(10000, "n")))
        self.assertEqual((refused.status, refused.headers.get("Retry-After")), (503, "30"))
        before = len(self.udp.sent)
        self.bye(call)  # the SRC ends its call during the drain
        self.reactor.advance(0.25)
        self.assertEqual(fired, [None])
        self.assertEqual(self.requests_sent(before), [])  # no BYE from the SRS was needed
        self.assertEqual(self.session(call)["end_reason"], "BYE from the SRC")
        self.assert_nothing_bound()

    def test_drain_timeout_then_bye(self) -> None:
        call, _ = self.start_call()
        self.service.drain_timeout = 3
        self.service.startService()
        fired: list[object] = []
        self.service.stopService().addCallback(fired.append)
        before = len(self.udp.sent)
        self.reactor.advance(2.9)
        self.assertEqual((fired, self.requests_sent(before)), ([], []))
        self.reactor.advance(0.25)
        self.assertEqual(fired, [None])
        self.assertEqual([r.method for r, _, _ in self.requests_sent(before)], ["BYE"])
        self.assertEqual(self.session(call)["end_reason"], "SRS shutting down")

    def test_no_ack_ends_the_session(self) -> None:
        call = Call(self)
        response = call.invite(*multipart(rfc7865_sdp(), rfc7865("complete.xml")))
        self.assertEqual(response.status, 200)
        before = len(self.udp.sent)
        self.reactor.advance(64 * self.config.sip.t1)
        sent = self.requests_sent(before)
        self.assertEqual([r.method for r, _, _ in sent][:1], ["BYE"])
        document = self.session(call)
        self.assertEqual((document["state"], document["end_reason"]), ("ended", "no ACK for 2xx"))
        self.assert_nothing_bound()
        self.assert_quiet()  # the unanswered BYE times out (timer F) and nothing is left

    def test_bye_from_src_releases_everything(self) -> None:
        call, _ = self.start_call()
        self.assertEqual(self.controller.ports.in_use, 4)
        self.bye(call)
        self.assert_nothing_bound()
        self.assertEqual(self.controller.sessions, {})
        self.assertEqual(self.controller.finished, 1)
        self.assertTrue(all(s["ended"] for s in self.session(call)["streams"]))
        self.assert_quiet()


# --- bad metadata ----------------------------------------------------------------------------


class BadMetadataTests(ControllerTestCase):
    def test_unparseable_metadata_does_not_fail_the_call(self) -> None:
        raw = b"<?xml version='1.0'?>\r\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'><participant"
        call = Call(self)
        response = call.setup(*multipart(sdp_offer(audio(10000, "1"), audio(10002, "2")), raw))
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.answer(response).media), 2)
        document = self.session(call)
        self.assertEqual(document["metadata_files"], ["metadata-0001.xml"])
        (version,) = document["metadata_versions"]
        self.assertIs(version["parsed"], False)
        self.assertIsInstance(version["error"], str)
        self.assertTrue(version["error"])
        self.assertEqual(Path(self.session_dir(call), "metadata-0001.xml").read_bytes(), raw)
        self.assertEqual(self.controller.counters, {"metadata_errors": 1})
        self.assertEqual(document["participants"], [])
        self.assertEqual([s["codec"] for s in document["streams"]], ["PCMU", "PCMU"])
        # A later good complete document is applied; the count stays.
        self.assertEqual(call.request("UPDATE", rfc7865("complete.xml"), "application/rs-metadata+xml").status, 200)
        document = self.session(call)
        self.assertEqual([v["parsed"] for v in document["metadata_versions"]], [False, True])
        self.assertEqual([p["id"] for p in document["participants"]], [ALICE, BOB])
        self.assertEqual(self.controller.counters, {"metadata_errors": 1})

    def test_bad_metadata_in_update_and_bye(self) -> None:
        call = Call(self)
        call.setup(*multipart(rfc7865_sdp(), rfc7865("complete.xml")))
        self.assertEqual(call.request("UPDATE", b"not xml at all", "application/rs-metadata+xml").status, 200)
        self.bye(call, b"<recording", "application/rs-metadata+xml")
        document = self.session(call)
        self.assertEqual([v["parsed"] for v in document["metadata_versions"]], [True, False, False])
        self.assertEqual(document["state"], "ended")
        self.assertEqual(len(document["participants"]), 2)  # the good version still stands
        self.assertEqual(self.controller.counters, {"metadata_errors": 2})
