"""The load generator's SIP: SIPREC INVITE, ACK and BYE written out by hand, responses read with
two regular expressions (the generator must stay cheap and independent of the server's parser)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.rtp import crypto_attribute

BOUNDARY = "bench-boundary"
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3})")
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_CSEQ = re.compile(rb"^CSeq[ \t]*:[ \t]*(\d+)[ \t]+(\w+)", re.IGNORECASE | re.MULTILINE)
_TO = re.compile(rb"^(?:To|t)[ \t]*:[^\r\n]*", re.IGNORECASE | re.MULTILINE)
_M_LINE = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)


@dataclass(frozen=True)
class Reply:
    status: int
    call_id: str
    cseq: int
    method: str
    to: str  # the whole To header line (with the SRS's tag), for the ACK and BYE
    ports: tuple[int, ...]  # m=audio ports of the SDP answer, in order


def parse_reply(data: bytes) -> Reply | None:
    """A SIP response's fields the generator needs; None for anything else (requests, junk)."""
    status = _STATUS.match(data)
    call_id = _CALL_ID.search(data)
    cseq = _CSEQ.search(data)
    to = _TO.search(data)
    if not (status and call_id and cseq and to):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    ports = tuple(int(p) for p in _M_LINE.findall(body))
    return Reply(int(status.group(1)), call_id.group(1).decode(), int(cseq.group(1)), cseq.group(2).decode(),
                 to.group(0).decode(), ports)


def offer(address: str, port: int, keys: tuple[bytes | None, bytes | None]) -> str:
    """Two labelled sendonly PCMU m-lines from ``port``/``port+2``, RTP/SAVP with a=crypto when
    keyed."""
    lines = ["v=0", f"o=bench 1 1 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0"]
    for index, key in enumerate(keys):
        profile = "RTP/SAVP" if key is not None else "RTP/AVP"
        lines += [f"m=audio {port + 2 * index} {profile} 0", "a=rtpmap:0 PCMU/8000", "a=sendonly",
                  f"a=label:{index + 1}"]
        if key is not None:
            lines.append(crypto_attribute(key))
    return "\r\n".join(lines) + "\r\n"


def metadata(call_id: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>'
        f'<session session_id="s1"><sipSessionID>{call_id}</sipSessionID></session>'
        '<participant participant_id="p1"><nameID aor="sip:alice@example.com"/></participant>'
        '<participant participant_id="p2"><nameID aor="sip:bob@example.com"/></participant>'
        '<stream stream_id="st1" session_id="s1"><label>1</label></stream>'
        '<stream stream_id="st2" session_id="s1"><label>2</label></stream>'
        '<participantstreamassoc participant_id="p1"><send>st1</send></participantstreamassoc>'
        '<participantstreamassoc participant_id="p2"><send>st2</send></participantstreamassoc>'
        "</recording>"
    )


@dataclass
class Dialog:
    """One call's SIP identity as the SRC (UAC) side sees it."""

    call_id: str
    local: tuple[str, int]  # the generator's SIP address
    server: tuple[str, int]
    to: str = ""  # the To line once answered
    cseq: int = 1
    branch_counter: int = 0

    def _request(self, method: str, cseq: int, body: str = "", content_type: str = "", extra: str = "") -> bytes:
        self.branch_counter += 1
        host, port = self.local
        to = self.to or f"To: <sip:srs@{self.server[0]}:{self.server[1]}>"
        lines = [
            f"{method} sip:srs@{self.server[0]}:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{self.call_id}-{self.branch_counter};rport",
            f"From: <sip:src@{host}>;tag={self.call_id[:10]}",
            to,
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:src@{host}:{port}>;+sip.src",
            "Max-Forwards: 70",
        ]
        if extra:
            lines.append(extra)
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def invite(self, sdp: str) -> bytes:
        body = (
            f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n"
            f"--{BOUNDARY}\r\nContent-Type: application/rs-metadata+xml\r\n"
            f"Content-Disposition: recording-session\r\n\r\n{metadata(self.call_id)}\r\n--{BOUNDARY}--\r\n"
        )
        self.branch_counter = 0  # a retransmission repeats the branch
        return self._request("INVITE", 1, body, f"multipart/mixed;boundary={BOUNDARY}", "Require: siprec")

    def ack(self) -> bytes:
        return self._request("ACK", 1)

    def bye(self) -> bytes:
        self.cseq = 2
        self.branch_counter = 10  # retransmissions of the BYE keep one branch
        return self._request("BYE", 2)
