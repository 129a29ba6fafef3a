"""A small SIPREC SRC for end-to-end tests: SIP over UDP (blocking), then paced RTP to the SRS.

SIPp cannot send a tone per stream in G.722 or Opus, nor vary loss and ordering per stream, so
the media tests drive the SRS with this client.  A stream with ``crypto`` is offered on
RTP/SAVP (or ``proto``) with an SDES ``a=crypto`` line and its packets leave SRTP-protected.  It parses with siprecd's own parser only on the
receiving side (responses); everything it sends is written out by hand.
"""

from __future__ import annotations

import base64
import random
import socket
import struct
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from siprecd.media.rtp import build_rtp
from siprecd.security.srtp import OutboundSRTP
from siprecd.security.suites import SUITES
from siprecd.sdp import parse as parse_sdp
from siprecd.sip.message import Response, parse_message

BOUNDARY = "siprecd-test-boundary"


@dataclass
class StreamSpec:
    label: str
    payload_type: int
    encoding: str  # rtpmap name/rate[/channels]
    payloads: list[bytes]  # one per packet
    timestamp_step: int  # RTP units per packet
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    extra_rtpmaps: Sequence[str] = ()
    # packet index -> (payload type, payload, index whose timestamp it carries, marker): packets
    # that replace the stream's own (telephone-events, say; see telephone_event()).
    overrides: Mapping[int, tuple[int, bytes, int, bool]] = field(default_factory=dict)
    # SDES: (suite, key||salt); the m-line offers a=crypto:1 with it and the RTP is protected.
    crypto: tuple[str, bytes] | None = None
    proto: str | None = None  # default: RTP/SAVP with crypto, RTP/AVP without
    extra_attributes: Sequence[str] = ()  # more a= lines for the m-line (more a=crypto, say)

    def protector(self) -> OutboundSRTP | None:
        if self.crypto is None:
            return None
        suite, material = self.crypto
        split = SUITES[suite].key_length
        return OutboundSRTP(suite, material[:split], material[split:])


def offer(streams: Sequence[StreamSpec], address: str, ports: Sequence[int], direction: str = "sendonly") -> str:
    lines = ["v=0", f"o=src 1 1 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0"]
    for stream, port in zip(streams, ports, strict=True):
        pts = [str(stream.payload_type)] + [m.split()[0] for m in stream.extra_rtpmaps]
        proto = stream.proto or ("RTP/SAVP" if stream.crypto else "RTP/AVP")
        lines.append(f"m=audio {port} {proto} {' '.join(pts)}")
        lines.append(f"a=rtpmap:{stream.payload_type} {stream.encoding}")
        lines.extend(f"a=rtpmap:{m}" for m in stream.extra_rtpmaps)
        if stream.crypto is not None:
            lines.append(f"a=crypto:1 {stream.crypto[0]} inline:{base64.b64encode(stream.crypto[1]).decode()}")
        lines.extend(f"a={a}" for a in stream.extra_attributes)
        lines.append(f"a={direction}")
        lines.append(f"a=label:{stream.label}")
    return "\r\n".join(lines) + "\r\n"


def metadata(streams: Sequence[StreamSpec]) -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<recording xmlns="urn:ietf:params:xml:ns:recording:1">',
             "<datamode>complete</datamode>",
             '<session session_id="s1"><sipSessionID>test</sipSessionID></session>']
    for index, stream in enumerate(streams):
        parts.append(f'<participant participant_id="p{index}"><nameID aor="sip:party{index}@example.com"/></participant>')
        parts.append(f'<stream stream_id="st{index}" session_id="s1"><label>{stream.label}</label></stream>')
        parts.append(f'<participantstreamassoc participant_id="p{index}"><send>st{index}</send></participantstreamassoc>')
    parts.append("</recording>")
    return "\n".join(parts)


class SRCClient:
    def __init__(self, server_port: int, host: str = "127.0.0.1") -> None:
        self.server = (host, server_port)
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((host, 0))
        self.sip.settimeout(5)
        self.local_port = self.sip.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]
        self.cseq = 0
        self.to_tag = ""
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((host, 0))
        self.answer_ports: dict[str, int] = {}
        self.answer: Any = None  # the last SDP answer (siprecd.sdp.SessionDescription)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def _request(self, method: str, body: str = "", content_type: str = "", cseq: int | None = None) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to = "<sip:srs@127.0.0.1>" + (f";tag={self.to_tag}" if self.to_tag else "")
        headers = [
            f"{method} sip:srs@{self.server[0]}:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
            f"From: <sip:src@127.0.0.1>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:src@127.0.0.1:{self.local_port}>;+sip.src",
            "Require: siprec" if method == "INVITE" and not self.to_tag else "",
            "Max-Forwards: 70",
        ]
        if body:
            headers.append(f"Content-Type: {content_type}")
        headers.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(h for h in headers if h) + "\r\n\r\n" + body).encode()

    def _final(self, method: str) -> Response:
        while True:
            data, _ = self.sip.recvfrom(65535)
            message = parse_message(data)
            if isinstance(message, Response) and message.cseq.method == method and message.status >= 200:
                return message

    def invite(self, streams: Sequence[StreamSpec], *, direction: str = "sendonly", with_metadata: bool = True) -> Response:
        sdp = offer(streams, "127.0.0.1", [self.rtp.getsockname()[1]] * len(streams), direction)
        if self.to_tag or not with_metadata:
            body, content_type = sdp, "application/sdp"
        else:
            body = (
                f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n"
                f"--{BOUNDARY}\r\nContent-Type: application/rs-metadata+xml\r\n"
                f"Content-Disposition: recording-session\r\n\r\n{metadata(streams)}\r\n--{BOUNDARY}--\r\n"
            )
            content_type = f"multipart/mixed;boundary={BOUNDARY}"
        self.sip.sendto(self._request("INVITE", body, content_type), self.server)
        response = self._final("INVITE")
        if response.status == 200:
            self.to_tag = response.to.tag or ""
            self.answer = answer = parse_sdp(response.body)
            self.answer_ports = {m.label or str(i): m.port for i, m in enumerate(answer.media)}
            self.sip.sendto(self._request("ACK", cseq=self.cseq), self.server)
        return response

    def bye(self) -> Response:
        self.sip.sendto(self._request("BYE"), self.server)
        return self._final("BYE")

    def send_rtp(
        self,
        streams: Sequence[StreamSpec],
        *,
        loss: float = 0.0,
        reorder: float = 0.0,
        gaps: Sequence[tuple[int, int]] = (),
        seed: int = 7,
        packet_time: float = 0.02,
        actions: Mapping[int, Callable[[], None]] | None = None,
    ) -> SendReport:
        """Send every stream's packets paced in real time (packet n in slot n, both streams of
        a slot back to back); returns what was sent when.

        ``gaps`` are (first_packet, count) ranges the SRC does not send (hold, silence
        suppression): the timestamps go on, the sequence numbers do not; ``loss`` drops that
        share at random; ``reorder`` swaps that share of adjacent packets (the later one goes out
        first, in the earlier one's slot).  ``actions[slot]`` is called at the start of that
        slot, before its packets (a re-INVITE in the middle of the media, say).
        """
        rng = random.Random(seed)
        count = max(len(s.payloads) for s in streams)
        skipped = {i for start, length in gaps for i in range(start, start + length)}
        plans: dict[str, list[tuple[int, int, bytes]]] = {}  # (slot, packet index, datagram)
        for stream in streams:
            plan = []
            protector = stream.protector()
            sequence = rng.randrange(65536)
            timestamp = rng.randrange(2**32)
            for index, payload in enumerate(stream.payloads):
                if index in skipped:
                    continue  # a sender that stops sending uses no sequence numbers
                payload_type, ts_index, marker = stream.payload_type, index, index == 0
                if index in stream.overrides:
                    payload_type, payload, ts_index, marker = stream.overrides[index]
                packet = build_rtp(
                    payload_type,
                    sequence & 0xFFFF,
                    (timestamp + ts_index * stream.timestamp_step) & 0xFFFFFFFF,
                    stream.ssrc,
                    payload,
                    marker=marker,
                )
                sequence += 1
                if protector is not None:
                    packet = protector.protect_rtp(packet)
                if loss and rng.random() < loss:
                    continue  # lost in the network: its sequence number is missing
                plan.append((index, index, packet))
            if reorder:
                for i in range(len(plan) - 1):
                    if rng.random() < reorder:
                        (slot_a, index_a, packet_a), (slot_b, index_b, packet_b) = plan[i], plan[i + 1]
                        plan[i], plan[i + 1] = (slot_a, index_b, packet_b), (slot_b, index_a, packet_a)
            plans[stream.label] = plan
        report = SendReport(time.time(), {label: [] for label in plans}, {label: [] for label in plans})
        start = time.monotonic()
        cursors = {label: 0 for label in plans}
        for slot in range(count):
            due = start + slot * packet_time
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if actions and slot in actions:
                actions[slot]()
            for stream in streams:
                label = stream.label
                plan = plans[label]
                while cursors[label] < len(plan) and plan[cursors[label]][0] <= slot:
                    _, index, packet = plan[cursors[label]]
                    self.rtp.sendto(packet, ("127.0.0.1", self.answer_ports[label]))
                    report.times[label].append(time.time())
                    report.indices[label].append(index)
                    cursors[label] += 1
        return report


@dataclass
class SendReport:
    """What :meth:`SRCClient.send_rtp` sent: per label, packet indices and wall-clock send times
    (``time.time()``, comparable with session.json's times), in sending order."""

    start: float
    indices: dict[str, list[int]]
    times: dict[str, list[float]]

    def sent(self, label: str) -> int:
        return len(self.indices[label])

    def first(self) -> float:
        """When the first packet of any stream left."""
        return min(times[0] for times in self.times.values() if times)

    def last(self) -> float:
        return max(times[-1] for times in self.times.values() if times)


def telephone_event(
    digit: int, start: int, packets: int, *, step: int = 160, volume: int = 10, payload_type: int = 101
) -> dict[int, tuple[int, bytes, int, bool]]:
    """RFC 4733 packets for one key press, as :attr:`StreamSpec.overrides` from packet ``start``:
    ``packets`` updates with growing durations (the first marked), the last of them with the E
    bit and sent three times (§2.5.1.4).  All carry the event's start timestamp; the event lasts
    ``packets * step`` units and takes ``packets + 2`` packet slots."""
    out = {}
    for n in range(packets + 2):
        duration = min(n + 1, packets) * step
        end = n >= packets - 1
        payload = struct.pack("!BBH", digit, (0x80 if end else 0) | volume, duration)
        out[start + n] = (payload_type, payload, start, n == 0)
    return out
