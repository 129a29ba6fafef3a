"""End to end on loopback: a whole SIPREC recording session from SIPp against ``twistd -n siprec``.

``sipp/siprec_call.xml`` sends a SIPREC INVITE (two labelled streams and RFC 7865 metadata), a
hold and a resume re-INVITE, an UPDATE with only partial metadata and a BYE with metadata.  The
scenario checks the answers with regexps; this test then reads SIPp's message log for what was
really sent and answered, and checks the final session.json and the stored metadata against it.
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import re
import socket
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e.server import Server, run_sipp, sipp_available

ALICE = "QWxpY2VFMkUwMDAwMDAwMQ=="
BOB = "Qm9iRTJFMDAwMDAwMDAwMg=="
CAROL = "Q2Fyb2xFMkUwMDAwMDAwMw=="
BOUNDARY = b"--siprec-e2e-boundary"

_BLOCK = re.compile(rb"^-{47} [^\n]*\n(?:UDP|TCP) message (sent|received) [^\n]*\n\n", re.M)


def sipp_messages(log: bytes) -> list[tuple[str, bytes]]:
    """(``sent`` | ``received``, message bytes) for every message in a SIPp -trace_msg log."""
    matches = list(_BLOCK.finditer(log))
    out = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(log)
        data = log[match.end():end]
        # SIPp ends each logged message with one extra LF line before the next separator.
        assert data.endswith(b"\n"), data[-40:]
        out.append((match.group(1).decode(), data[:-1]))
    return out


def split(message: bytes) -> tuple[str, dict[str, str], bytes]:
    """Start line, headers (last value wins, lower-case names) and the Content-Length body."""
    head, _, rest = message.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return lines[0], headers, rest[:length]


def answer_media(sdp: bytes) -> list[dict[str, Any]]:
    """Per m-line: port, formats, label, direction, rtcp port (independent of siprecd.sdp)."""
    media: list[dict[str, Any]] = []
    for line in sdp.decode().split("\r\n"):
        if line.startswith("m="):
            kind, port, proto, *formats = line[2:].split()
            media.append({"media": kind, "port": int(port), "proto": proto, "formats": formats,
                          "label": None, "direction": None, "rtcp": None})
        elif media and line.startswith("a=label:"):
            media[-1]["label"] = line[len("a=label:"):]
        elif media and line.startswith("a=rtcp:"):
            media[-1]["rtcp"] = int(line[len("a=rtcp:"):].split()[0])
        elif media and line in ("a=recvonly", "a=sendonly", "a=sendrecv", "a=inactive"):
            media[-1]["direction"] = line[2:]
    return media


class SIPRECCallTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not sipp_available():
            raise SkipTest("sipp (Debian package sip-tester) is not installed: run scripts/setup")
        self.server = Server(self.mktemp())
        self.server.start()
        self.addCleanup(self._stop)
        config = configparser.ConfigParser()
        config.read(os.path.join(self.server.directory, "siprecd.conf"))
        self.port_min = config.getint("media", "port_min")
        self.port_max = config.getint("media", "port_max")

    def _stop(self) -> None:
        self.assertIn("Server Shut Down.", self.server.stop_cleanly(self))

    def run_call(self, transport: str) -> list[tuple[str, bytes]]:
        directory = os.path.join(self.server.directory, "sipp")
        result = run_sipp("siprec_call.xml", self.server.sip_port, directory, transport=transport)
        self.assertEqual(
            result.returncode, 0,
            f"siprec_call.xml over {transport}: {result.explain()}\n--- server log\n{self.server.log()[-4000:]}",
        )
        with open(os.path.join(directory, f"sipp-siprec_call.xml-{transport}.msg"), "rb") as handle:
            return sipp_messages(handle.read())

    def sessions(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in glob.glob(os.path.join(self.server.recordings, "*", "*", "*", "*", "session.json")):
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            document["_directory"] = os.path.dirname(path)
            found[document["call_id"]] = document
        return found

    def check_call(self, transport: str, messages: list[tuple[str, bytes]]) -> None:
        sent = [split(m) for kind, m in messages if kind == "sent"]
        received = [split(m) for kind, m in messages if kind == "received"]
        self.assertEqual(
            [start.split()[0] for start, _, _ in sent], ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "UPDATE", "BYE"]
        )
        finals = [(start, headers, body) for start, headers, body in received if not start.startswith("SIP/2.0 1")]
        self.assertEqual(
            [(start, headers["cseq"]) for start, headers, _ in finals],
            [("SIP/2.0 200 OK", "1 INVITE"), ("SIP/2.0 200 OK", "2 INVITE"), ("SIP/2.0 200 OK", "3 INVITE"),
             ("SIP/2.0 200 OK", "4 UPDATE"), ("SIP/2.0 200 OK", "5 BYE")],
        )
        call_id = sent[0][1]["call-id"]
        srs_contact = finals[0][1]["contact"]
        self.assertRegex(srs_contact, r"^<sip:srs@127\.0\.0\.1:\d+(;transport=tcp)?>;\+sip\.srs$")
        # Answers: plain SDP, two m-lines, each label on the same even port all call long.
        answers = [answer_media(body) for _, headers, body in finals[:3]]
        for _, headers, _ in finals[:3]:
            self.assertEqual(headers["content-type"], "application/sdp")
        ports = [m["port"] for m in answers[0]]
        self.assertEqual(len(set(ports)), 2)
        for port in ports:
            self.assertEqual(port % 2, 0)
            self.assertTrue(self.port_min <= port < port + 1 <= self.port_max, (port, self.port_min, self.port_max))
        expected = [
            [{"media": "audio", "port": port, "proto": "RTP/AVP", "formats": ["0"], "label": label,
              "direction": direction, "rtcp": port + 1} for port, label in zip(ports, ("10", "20"))]
            for direction in ("recvonly", "inactive", "recvonly")
        ]
        self.assertEqual(answers, expected)
        self.assertEqual((finals[3][2], finals[4][2]), (b"", b""))

        # The metadata bodies as sent: the INVITE's rs-metadata part, the UPDATE and BYE bodies.
        invite_body = sent[0][2]
        part_head = (b"\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n")
        _, found, rest = invite_body.partition(BOUNDARY + part_head)
        self.assertTrue(found, invite_body)
        first, found, _ = rest.partition(b"\r\n" + BOUNDARY + b"--")
        self.assertTrue(found)
        bodies = [first, sent[6][2], sent[7][2]]
        self.assertTrue(all(b.startswith(b"<?xml") for b in bodies), bodies)

        document = self.sessions()[call_id]
        self.assertEqual(document["state"], "ended")
        self.assertEqual(document["end_reason"], "BYE from the SRC")
        self.assertIsNotNone(document["ended_at"])
        self.assertIs(document["siprec"], True)
        self.assertEqual(document["src"]["address"], "127.0.0.1")
        self.assertEqual(document["src"]["transport"], transport)
        self.assertEqual(
            [(s["label"], s["codec"], s["direction"], s["rtp_port"], s["rtcp_port"], s["sending_participants"], s["ended"])
             for s in document["streams"]],
            [("10", "PCMU", "recvonly", ports[0], ports[0] + 1, [ALICE], True),
             ("20", "PCMU", "recvonly", ports[1], ports[1] + 1, [BOB], True)],
        )
        self.assertEqual(
            [(p["id"], p["name"], p["aor"], p["numbers"], p["associate_time"], p["disassociate_time"])
             for p in document["participants"]],
            [(ALICE, "Alice Caller", "sip:+15551230001@src.example.com", ["+15551230001"], "2024-05-01T09:30:00Z", None),
             (BOB, "Bob Callee", "sip:+15551230002@src.example.com", ["+15551230002"], "2024-05-01T09:30:00Z", None),
             (CAROL, "Carol Supervisor", "sip:+15551230003@src.example.com", ["+15551230003"],
              "2024-05-01T09:31:00Z", "2024-05-01T09:32:00Z")],
        )
        self.assertEqual(document["metadata_files"], ["metadata-0001.xml", "metadata-0002.xml", "metadata-0003.xml"])
        self.assertEqual(
            [(v["method"], v["content_type"], v["parsed"], v["error"]) for v in document["metadata_versions"]],
            [("INVITE", "application/rs-metadata+xml", True, None),
             ("UPDATE", "application/rs-metadata+xml", True, None),
             ("BYE", "application/rs-metadata+xml", True, None)],
        )
        for name, body in zip(document["metadata_files"], bodies):
            with open(os.path.join(document["_directory"], name), "rb") as handle:
                self.assertEqual(handle.read(), body, name)
        # No RTP/RTCP pair of the call is still bound once it has ended.
        for port in ports:
            for number in (port, port + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind(("127.0.0.1", number))

    def test_siprec_call_udp_and_tcp(self) -> None:
        for transport, name in (("u1", "UDP"), ("t1", "TCP")):
            self.check_call(name, self.run_call(transport))
        self.assertEqual(len(self.sessions()), 2)
