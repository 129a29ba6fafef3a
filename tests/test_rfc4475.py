"""RFC 4475 torture messages through the real SIP stack: right answer for each, none crashes."""

from __future__ import annotations

import json
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.sip.message import NotSIP, ResponseSpec, parse_message
from siprecd.sip.source import Source
from siprecd.sip.stack import SIPStack
from tests.sipfakes import FakeUDP

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "rfc4475")

with open(os.path.join(DATA, "manifest.json")) as _handle:
    MANIFEST = json.load(_handle)

# Where RFC 4475 allows more than one reaction, the one this SRS gives and why.
ALTERNATIVES = {
    # "An element could choose to accept" these liberal readings; the SRS does.
    "escruri": "200",  # escaped headers in the Request-URI are not acted upon
    # Method inspection (RFC 3261 §8.2.1) comes before header inspection: a UAS that is not a
    # registrar answers REGISTER 405 whatever its To/Contact look like.
    "regbadct": "405",
    "unksm2": "405",
    # "A 400 Bad Request is also acceptable" for a CSeq method that differs from the method.
    "mismatch02": "400",
}


class RecordingApp:
    """Answers every dialog request 200 so that only the core's checks decide."""

    def __init__(self) -> None:
        self.invites = 0

    def invite(self, request: object, dialog: object) -> ResponseSpec:
        self.invites += 1
        return ResponseSpec(200, "OK")

    reinvite = update = info = invite

    def bye(self, request: object, dialog: object) -> None:
        pass

    def acked(self, dialog: object) -> None:
        pass

    def dialog_ended(self, dialog: object, reason: str) -> None:
        pass


def run(name: str) -> tuple[SIPStack, list[str]]:
    with open(os.path.join(DATA, f"{name}.dat"), "rb") as handle:
        data = handle.read()
    clock = Clock()
    stack = SIPStack(clock, RecordingApp())
    udp = FakeUDP()
    stack.transports.udp = udp  # type: ignore[assignment]
    stack.receive(data, Source("UDP", "192.0.2.1", 5060))
    statuses = [sent.split(b" ", 2)[1].decode() for sent, _, _ in udp.sent]
    stack.layer.stop()
    return stack, [s for s in statuses if s != "100"]


class TortureTests(SynchronousTestCase):
    def test_alternatives_are_ones_the_rfc_allows(self) -> None:
        by_name = {entry["name"]: entry for entry in MANIFEST}
        for name, code in ALTERNATIVES.items():
            allowed = by_name[name].get("also_ok", [])
            self.assertTrue(code in allowed or (code != "400" and "parse" in allowed), name)

    def test_manifest_is_complete(self) -> None:
        names = {entry["name"] for entry in MANIFEST}
        files = {f[:-4] for f in os.listdir(DATA) if f.endswith(".dat")}
        self.assertEqual(names, files)
        self.assertEqual(len(names), 49)


def _make_test(entry: dict[str, object]):  # type: ignore[no-untyped-def]
    name = str(entry["name"])
    expect = str(entry["expect"])

    def test(self: SynchronousTestCase) -> None:
        stack, finals = run(name)
        self.assertEqual(stack.counters["internal_errors"], 0, f"{name}: internal error")
        self.assertEqual(self.flushLoggedErrors(), [], f"{name}: logged errors")
        wanted = ALTERNATIVES.get(name)
        if expect == "parse":
            with open(os.path.join(DATA, f"{name}.dat"), "rb") as handle:
                message = parse_message(handle.read())
            message.validate()
            if stack.counters["responses_received"]:
                self.assertEqual(finals, [], f"{name}: a response is never answered")
            else:
                self.assertEqual(len(finals), 1, f"{name}: one final response")
                self.assertNotEqual(finals[0], "400", f"{name} must parse")
                self.assertNotEqual(finals[0], "500", f"{name} must not fail inside")
        elif expect == "drop":
            self.assertEqual(finals, [], f"{name} must be dropped")
        elif expect == "400":
            self.assertEqual(finals, [wanted or "400"], name)
        else:
            self.assertEqual(finals, [wanted or str(entry["code"])], name)

    test.__name__ = f"test_{name}"
    test.__doc__ = f"RFC 4475 {entry['section']} {name}: {entry['notes']}"
    return test


for _entry in MANIFEST:
    setattr(TortureTests, f"test_{_entry['name']}", _make_test(_entry))


class NotSIPTests(SynchronousTestCase):
    def test_garbage_is_dropped_and_counted(self) -> None:
        clock = Clock()
        stack = SIPStack(clock, RecordingApp())
        udp = FakeUDP()
        stack.transports.udp = udp  # type: ignore[assignment]
        for junk in (b"\x16\x03\x01\x02\x00\x01", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"hello"):
            with self.assertRaises(NotSIP):
                parse_message(junk)
            stack.receive(junk, Source("UDP", "192.0.2.1", 5060))
        self.assertEqual(udp.sent, [])
        self.assertEqual(stack.counters["not_sip_dropped"], 3)
