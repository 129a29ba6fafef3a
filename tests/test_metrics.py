"""Prometheus metrics (siprecd.metrics, siprecd.web.metrics): every family, exact values.

The SIP stack and the controller are driven as in tests/test_siprec_controller.py (bytes into
``SIPStack.receive``, RTP into the fake UDP ports' protocols), with one :class:`Metrics` passed
to both; each test parses the exposition with prometheus_client's own parser.
"""

from __future__ import annotations

import base64
import glob
import os
from typing import Any
from unittest import mock

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as PROMETHEUS_TEXT
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from siprecd.config import load_config
from siprecd.crypto.keystore import MemoryKeyStore
from siprecd.crypto.rotation import KeyRotation
from siprecd.media.rtp import build_rtp
from siprecd.metrics import Metrics, codec_label, method_label, outcome_of
from siprecd.recording.files import disk_free
from siprecd.security.srtp import OutboundSRTP
from siprecd.sip.message import Limits
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.stack import SIPStack
from siprecd.sip.transaction import TimerSettings
from siprecd.sip.uas import CoreSettings
from siprecd.siprec.controller import build_controller
from siprecd.web.metrics import MetricsResource
from tests.test_siprec_controller import (
    PORT_MIN,
    SRC,
    SRS_ADDRESS,
    START,
    Call,
    ControllerTestCase,
    FakeUDP,
    MediaReactor,
    audio,
    multipart,
    sdp_offer,
)

PEER = ("198.51.100.7", 10000)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, (sample name, labels) -> value) of an exposition."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return types, samples


class MetricsTestCase(ControllerTestCase):
    """A ControllerTestCase whose stack and controller share one Metrics."""

    def start(self, **environment: str) -> None:
        self.recordings = os.path.abspath(self.mktemp())
        env = {
            "SIPRECD_RECORDING_DIRECTORY": self.recordings,
            "SIPRECD_MEDIA_PORT_MIN": str(PORT_MIN),
            "SIPRECD_MEDIA_PORT_MAX": str(PORT_MIN + 19),
            "SIPRECD_MEDIA_RECEIVE_BUFFER": "0",
            **self.environment,
            **environment,
        }
        os.makedirs(self.recordings)  # preflight's job in the server
        self.config = load_config(None, env)
        self.reactor = MediaReactor()
        self.reactor.advance(START)
        self.metrics = Metrics(process=False)
        self.controller, self.service = build_controller(
            self.reactor, self.config, metrics=self.metrics, port_probe=self.reactor.bindable
        )
        sip = self.config.sip
        self.stack = SIPStack(
            self.reactor,
            self.controller,
            limits=Limits(max_message_size=sip.max_message_size, max_headers=sip.max_headers),
            timers=TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4),
            settings=CoreSettings(user_agent=sip.user_agent),
            rate_limiter=RateLimiter(self.reactor, sip.rate_limit, sip.rate_burst),
            metrics=self.metrics,
        )
        self.controller.attach(self.stack)
        self.udp = FakeUDP()
        self.stack.transports.udp = self.udp  # type: ignore[assignment]
        self.stack.core.local_addresses["UDP"] = (SRS_ADDRESS, 5060)

    def scrape(self) -> Samples:
        body, content_type = self.metrics.exposition()
        self.assertEqual(content_type, PROMETHEUS_TEXT)
        return parse(body.decode())[1]

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, frozenset(labels.items())))

    def assert_values(self, expected: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
        samples = self.scrape()
        self.assertEqual({key: samples.get(key) for key in expected}, expected)

    def labelled(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample ``name`` has, by its sorted labels."""
        return {
            tuple(sorted(labels)): value for (sample, labels), value in self.scrape().items() if sample == name
        }

    def ports(self, response: Any) -> list[int]:
        return [m.port for m in self.answer(response).media]

    def rtp(self, port: int, sequence: int, *, payload_type: int = 0, ssrc: int = 0x1234) -> None:
        packet = build_rtp(payload_type, sequence, 1000 + 160 * sequence, ssrc, bytes([0xFF]) * 160)
        self.reactor.udpPorts[port].protocol.datagramReceived(packet, PEER)


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


class ExpositionTests(MetricsTestCase):
    def test_families_before_any_traffic(self) -> None:
        measured: list[tuple[str, int | None]] = []

        def spy(path: str) -> int | None:
            free = disk_free(path)
            measured.append((path, free))
            return free

        with mock.patch("siprecd.metrics.disk_free", spy):
            body, _ = self.metrics.exposition()
        types, samples = parse(body.decode())
        self.assertEqual(
            types,
            {
                "siprecd_sessions_active": "gauge",
                "siprecd_sessions_finished": "counter",
                "siprecd_sip_requests": "counter",
                "siprecd_sip_responses": "counter",
                "siprecd_sip_messages_dropped": "counter",
                "siprecd_rtp_packets": "counter",
                "siprecd_rtp_payload_bytes": "counter",
                "siprecd_rtp_lost_packets": "counter",
                "siprecd_rtp_late_packets": "counter",
                "siprecd_rtp_duplicate_packets": "counter",
                "siprecd_recording_bytes_written": "counter",
                "siprecd_srtp_sessions": "counter",
                "siprecd_srtp_auth_failures": "counter",
                "siprecd_disk_free_bytes": "gauge",
                "siprecd_durable_writes_queued": "counter",
                "siprecd_durable_writes_done": "counter",
                "siprecd_durable_writes_failed": "counter",
                "siprecd_errors": "counter",
            },
        )
        # The gauge is exactly what the real disk_free measured on the recording directory; that
        # measurement is the real free space, give or take what others wrote since (trial's
        # assertAlmostEqual has no delta=, so this was an exact comparison with the disk).
        free = samples.pop(key("siprecd_disk_free_bytes"))
        self.assertGreater(free, 0)
        self.assertEqual(measured, [(self.recordings, free)])
        st = os.statvfs(self.recordings)
        self.assertApproximates(free, st.f_bavail * st.f_frsize, 64 * 1024 * 1024)
        self.assertEqual(
            samples,
            {
                key("siprecd_sessions_active"): 0,
                key("siprecd_durable_writes_queued_total"): 0,
                key("siprecd_durable_writes_done_total"): 0,
                key("siprecd_durable_writes_failed_total"): 0,
                key("siprecd_sip_messages_dropped_total", reason="not_sip"): 0,
                key("siprecd_sip_messages_dropped_total", reason="malformed"): 0,
                key("siprecd_sip_messages_dropped_total", reason="rate_limited"): 0,
                key("siprecd_recording_bytes_written_total"): 0,
                key("siprecd_srtp_auth_failures_total", kind="rtp"): 0,
                key("siprecd_srtp_auth_failures_total", kind="rtcp"): 0,
                key("siprecd_errors_total", kind="storage"): 0,
                key("siprecd_errors_total", kind="recording"): 0,
                key("siprecd_errors_total", kind="metadata"): 0,
                key("siprecd_errors_total", kind="internal"): 0,
            },
        )
        # Naming conventions: siprecd_ prefix, counters end in _total, every family has help.
        for line in body.decode().splitlines():
            if line.startswith("# HELP"):
                self.assertTrue(line.split(" ", 3)[2].startswith("siprecd_"), line)
                self.assertGreater(len(line.split(" ", 3)[3]), 20, line)
            elif not line.startswith("#"):
                name = line.split("{")[0].split(" ")[0]
                if types[name.removesuffix("_total")] == "counter":
                    self.assertTrue(name.endswith("_total"), line)

    def test_no_disk_free_when_the_directory_is_gone(self) -> None:
        with mock.patch("os.statvfs", side_effect=FileNotFoundError(2, "No such file")):
            self.assertIsNone(self.value("siprecd_disk_free_bytes"))
        self.assertIsNotNone(self.value("siprecd_disk_free_bytes"))

    def test_process_metrics_by_default(self) -> None:
        body, _ = Metrics().exposition()
        if os.path.exists("/proc/self/stat"):
            self.assertIn(b"process_resident_memory_bytes ", body)

    def test_openmetrics_when_asked(self) -> None:
        body, content_type = self.metrics.exposition("application/openmetrics-text; version=1.0.0")
        self.assertTrue(content_type.startswith("application/openmetrics-text; version=1.0.0"), content_type)
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_two_instances_are_independent(self) -> None:
        other = Metrics(process=False)
        other.sip_request("OPTIONS", "UDP")
        self.assertIsNone(self.value("siprecd_sip_requests_total", method="OPTIONS", transport="UDP"))


class SIPTests(MetricsTestCase):
    def options(self, branch: str = "z9hG4bK-o1") -> bytes:
        return (
            f"OPTIONS sip:srs@{SRS_ADDRESS} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch={branch}\r\n"
            "From: <sip:a@example.com>;tag=1\r\nTo: <sip:srs@example.net>\r\nCall-ID: o1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def test_requests_and_responses(self) -> None:
        self.stack.receive(self.options(), SRC)
        self.stack.receive(self.options(), SRC)  # a retransmission: the 200 again, not counted
        self.assertEqual(len(self.udp.sent), 2)
        self.stack.receive(self.options().replace(b"OPTIONS", b"FROB"), SRC)  # 501, method "other"
        self.assertEqual(
            self.labelled("siprecd_sip_requests_total"),
            {
                (("method", "OPTIONS"), ("transport", "UDP")): 2,
                (("method", "other"), ("transport", "UDP")): 1,
            },
        )
        self.assertEqual(
            self.labelled("siprecd_sip_responses_total"),
            {(("code", "200"), ("method", "OPTIONS")): 1, (("code", "501"), ("method", "other")): 1},
        )
        tcp = SRC.__class__("TCP", SRC.host, SRC.port)
        self.stack.receive(self.options(branch="z9hG4bK-o2").replace(b"/UDP", b"/TCP"), tcp)
        self.assertEqual(self.value("siprecd_sip_requests_total", method="OPTIONS", transport="TCP"), 1)

    def test_invite_responses_include_100(self) -> None:
        call = Call(self)
        call.setup(sdp_offer(audio(10000, "1")))
        self.assertEqual(
            self.labelled("siprecd_sip_responses_total"),
            {(("code", "100"), ("method", "INVITE")): 1, (("code", "200"), ("method", "INVITE")): 1},
        )
        # The 2xx is retransmitted until the ACK arrives; only the first counts.
        self.assertEqual(self.value("siprecd_sip_requests_total", method="ACK", transport="UDP"), 1)

    def test_drops(self) -> None:
        self.stack.receive(b"\x16\x03\x01 hello, this is TLS", SRC)
        self.stack.receive(b"\r\n\r\n", SRC)  # a keep-alive: neither a request nor a drop
        # Malformed requests get a stateless 400 (counted as sent); malformed responses nothing.
        self.stack.receive(self.options().replace(b"CSeq: 1 OPTIONS\r\n", b"CSeq: x\r\n"), SRC)
        self.stack.receive(b"SIP/2.0 200 OK\r\nVia: x\r\nContent-Length: 0\r\n\r\n", SRC)
        self.assert_values(
            {
                key("siprecd_sip_messages_dropped_total", reason="not_sip"): 1,
                key("siprecd_sip_messages_dropped_total", reason="malformed"): 2,
                key("siprecd_sip_messages_dropped_total", reason="rate_limited"): 0,
            }
        )
        self.assertEqual(self.labelled("siprecd_sip_responses_total"), {(("code", "400"), ("method", "OPTIONS")): 1})
        self.assertEqual(self.labelled("siprecd_sip_requests_total"), {})

    def test_rate_limited(self) -> None:
        self.start(SIPRECD_SIP_RATE_LIMIT="1", SIPRECD_SIP_RATE_BURST="1")
        first, second = Call(self), Call(self)
        self.assertEqual(first.request("BYE").status, 481)
        self.assertEqual(second.request("BYE").status, 503)
        self.assertEqual(self.value("siprecd_sip_messages_dropped_total", reason="rate_limited"), 1)
        self.assertEqual(
            self.labelled("siprecd_sip_responses_total"),
            {(("code", "481"), ("method", "BYE")): 1, (("code", "503"), ("method", "BYE")): 1},
        )

    def test_labels_are_bounded(self) -> None:
        self.assertEqual(method_label("INVITE"), "INVITE")
        self.assertEqual(method_label("invite"), "other")  # methods are case-sensitive
        self.assertEqual(method_label("X" * 100), "other")
        self.metrics.sip_request("OPTIONS", "SCTP")
        self.assertEqual(self.value("siprecd_sip_requests_total", method="OPTIONS", transport="other"), 1)


class SessionTests(MetricsTestCase):
    def test_active_and_finished(self) -> None:
        calls = [Call(self), Call(self)]
        for n, call in enumerate(calls):
            call.setup(sdp_offer(audio(10000 + 2 * n, "1")))
        self.assertEqual(self.value("siprecd_sessions_active"), 2)
        self.assertEqual(self.labelled("siprecd_sessions_finished_total"), {})
        self.bye(calls[0])
        self.assertEqual(self.value("siprecd_sessions_active"), 1)
        self.controller.shutdown()
        self.assertEqual(self.value("siprecd_sessions_active"), 0)
        self.assertEqual(
            self.labelled("siprecd_sessions_finished_total"),
            {(("outcome", "bye"),): 1, (("outcome", "shutdown"),): 1},
        )

    def test_no_ack(self) -> None:
        call = Call(self)
        self.assertEqual(call.invite(sdp_offer(audio(10000, "1"))).status, 200)
        self.reactor.advance(64 * self.config.sip.t1 + 1)  # timer L: no ACK, the SRS sends BYE
        self.assertEqual(self.labelled("siprecd_sessions_finished_total"), {(("outcome", "no_ack"),): 1})

    def test_recording_failed(self) -> None:
        call = Call(self)
        call.setup(sdp_offer(audio(10000, "1")))
        dialog = next(iter(self.stack.core.dialogs))
        self.controller._abort(dialog, "disk full")
        self.assert_values(
            {
                key("siprecd_sessions_finished_total", outcome="recording_failed"): 1,
                key("siprecd_errors_total", kind="recording"): 1,
            }
        )

    def test_interrupted_sessions_recovered_at_start(self) -> None:
        with mock.patch("siprecd.siprec.controller.recover_interrupted", return_value=[{}, {}]):
            self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(self.labelled("siprecd_sessions_finished_total"), {(("outcome", "interrupted"),): 2})

    def test_outcomes(self) -> None:
        self.assertEqual(
            [
                outcome_of(reason)
                for reason in (
                    "BYE from the SRC",
                    "cancelled",
                    "rejected with 488",
                    "no ACK for 2xx",
                    "recording failed: disk full",
                    "SRS shutting down",
                    "interrupted: found at start-up",
                    "orphaned: no media and no SIP for 3600s ([state] orphan_timeout)",
                    "something new",
                )
            ],
            ["bye", "cancelled", "rejected", "no_ack", "recording_failed", "shutdown", "interrupted", "orphaned", "other"],
        )

    def test_state_store_degraded_and_resyncs(self) -> None:
        class Store:
            degraded = True
            counters = {"resyncs": 3}

        store = Store()
        self.metrics.watch_state(store)
        _, samples = parse(self.metrics.exposition()[0].decode())
        self.assertEqual(samples[key("siprecd_state_store_degraded")], 1)
        self.assertEqual(samples[key("siprecd_state_store_resyncs_total")], 3)
        store.degraded = False
        _, samples = parse(self.metrics.exposition()[0].decode())
        self.assertEqual(samples[key("siprecd_state_store_degraded")], 0)


class MediaTests(MetricsTestCase):
    def test_rtp_counts_live_and_after_the_session(self) -> None:
        call = Call(self)
        a, b = self.ports(call.setup(sdp_offer(audio(10000, "a"), audio(10002, "b", formats="8"))))
        # Stream a: 3 in order, 3 missing, 9 more (more than the reorder window of 8 held: the
        # 3 are given up as lost), then one of the missing (too late) and a duplicate.
        for sequence in [0, 1, 2, *range(6, 15), 4, 14]:
            self.rtp(a, sequence)
        for sequence in range(5):
            self.rtp(b, sequence, payload_type=8)
        live = {
            key("siprecd_rtp_packets_total", codec="PCMU"): 14,
            key("siprecd_rtp_payload_bytes_total", codec="PCMU"): 14 * 160,
            key("siprecd_rtp_lost_packets_total", codec="PCMU"): 3,
            key("siprecd_rtp_late_packets_total", codec="PCMU"): 1,
            key("siprecd_rtp_duplicate_packets_total", codec="PCMU"): 1,
            key("siprecd_rtp_packets_total", codec="PCMA"): 5,
            key("siprecd_rtp_payload_bytes_total", codec="PCMA"): 5 * 160,
            key("siprecd_rtp_lost_packets_total", codec="PCMA"): 0,
            key("siprecd_rtp_late_packets_total", codec="PCMA"): 0,
            key("siprecd_rtp_duplicate_packets_total", codec="PCMA"): 0,
        }
        self.assert_values(live)
        self.bye(call)
        self.assert_values(live)  # the counts moved from the live session to the totals

        # A second session adds to the totals.
        second = Call(self)
        [port] = self.ports(second.setup(sdp_offer(audio(10000, "a"))))
        self.rtp(port, 0, ssrc=7)
        self.assertEqual(self.value("siprecd_rtp_packets_total", codec="PCMU"), 15)
        self.bye(second)
        self.assertEqual(self.value("siprecd_rtp_packets_total", codec="PCMU"), 15)

    def test_srtp_sessions_and_auth_failures_live_and_after_the_session(self) -> None:
        key_salt = os.urandom(30)
        inline = base64.b64encode(key_salt).decode()
        offer = audio(10000, "a", extra=f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}\n")
        call = Call(self)
        [port] = self.ports(call.setup(sdp_offer(offer.replace("RTP/AVP", "RTP/SAVP"))))
        sender = OutboundSRTP("AES_CM_128_HMAC_SHA1_80", key_salt[:16], key_salt[16:])
        protocol = self.reactor.udpPorts[port].protocol
        protocol.datagramReceived(sender.protect_rtp(build_rtp(0, 1, 160, 5, b"\xff" * 160)), PEER)
        self.rtp(port, 2, ssrc=5)  # plain RTP on the secured stream
        self.rtp(port, 3, ssrc=5)
        self.reactor.udpPorts[port + 1].protocol.datagramReceived(b"\x80\xc9\x00\x01\x00\x00\x00\x05", PEER)
        counts = {
            key("siprecd_srtp_sessions_total", method="sdes", suite="AES_CM_128_HMAC_SHA1_80"): 1,
            key("siprecd_srtp_auth_failures_total", kind="rtp"): 2,
            key("siprecd_srtp_auth_failures_total", kind="rtcp"): 1,
            key("siprecd_rtp_packets_total", codec="PCMU"): 1,
        }
        self.assert_values(counts)
        self.bye(call)
        self.assert_values(counts)  # handed over to the totals

    def test_recording_bytes_are_the_file_sizes(self) -> None:
        call = Call(self)
        a, b = self.ports(call.setup(sdp_offer(audio(10000, "a"), audio(10002, "b"))))
        before = self.value("siprecd_recording_bytes_written_total")
        self.assertEqual(before, 3 * 44)  # two stream files and the stereo mix: their headers
        for sequence in range(100):
            self.rtp(a, sequence)
            self.rtp(b, sequence, ssrc=99)
        self.reactor.advance(self.config.recording.flush_interval * 2)
        live = self.value("siprecd_recording_bytes_written_total")
        assert live is not None
        self.assertGreater(live, before)
        self.bye(call)
        files = glob.glob(os.path.join(self.session_dir(call), "*.wav"))
        self.assertEqual(len(files), 3)
        self.assertEqual(self.value("siprecd_recording_bytes_written_total"), sum(os.path.getsize(f) for f in files))

    def test_codec_labels(self) -> None:
        self.assertEqual(
            [codec_label(c) for c in ("PCMU", "pcmu", "PCMA", "g722", "OPUS", "opus", "L16", None)],
            ["PCMU", "PCMU", "PCMA", "G722", "opus", "opus", "L16", "unknown"],
        )

    def test_reoffer_codec_change_keeps_the_first_codec(self) -> None:
        call = Call(self)
        [port] = self.ports(call.setup(sdp_offer(audio(10000, "a", formats="0 8"))))
        self.rtp(port, 0)
        self.assertEqual(self.ports(call.reinvite(sdp_offer(audio(10000, "a", formats="8"), version=2))), [port])
        self.rtp(port, 1, payload_type=8)
        self.assertEqual(self.labelled("siprecd_rtp_packets_total"), {(("codec", "PCMU"),): 2})
        self.bye(call)
        self.assertEqual(self.labelled("siprecd_rtp_packets_total"), {(("codec", "PCMU"),): 2})


class ErrorTests(MetricsTestCase):
    def test_metadata(self) -> None:
        call = Call(self)
        call.setup(*multipart(sdp_offer(audio(10000, "1")), b"<recording><not-closed>"))
        self.assertEqual(self.value("siprecd_errors_total", kind="metadata"), 1)
        # An unreadable BYE body counts too.
        self.bye(call, b"--x\r\nbroken", "multipart/mixed;boundary=nothere")
        self.assertEqual(self.value("siprecd_errors_total", kind="metadata"), 2)

    def test_storage(self) -> None:
        call = Call(self)
        with mock.patch.object(self.controller.at_rest, "store_metadata", side_effect=OSError(28, "No space left")):
            call.setup(*multipart(sdp_offer(audio(10000, "1")), b"<x/>"))
        samples = self.scrape()
        # The metadata and both SDP files could not be stored; the call goes on.
        self.assertEqual(samples[key("siprecd_errors_total", kind="storage")], 3)

    def test_internal(self) -> None:
        call = Call(self)
        call.setup(sdp_offer(audio(10000, "1")))
        with mock.patch.object(self.controller, "info", side_effect=RuntimeError("bug")):
            self.assertEqual(call.request("INFO").status, 500)
        self.flushLoggedErrors(RuntimeError)
        with mock.patch("siprecd.sip.stack.parse_message", side_effect=RuntimeError("bug")):
            self.stack.receive(b"OPTIONS x", SRC)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.value("siprecd_errors_total", kind="internal"), 2)
        self.assertEqual(self.value("siprecd_sip_responses_total", method="INFO", code="500"), 1)


class RotationTests(SynchronousTestCase):
    def test_rotations_and_failures(self) -> None:
        clock = Clock()
        clock.advance(START)
        store = MemoryKeyStore(clock=clock.seconds)
        store.current()
        metrics = Metrics(process=False)
        rotation = KeyRotation(store, clock, 10, retry_delay=1, metrics=metrics)
        rotation.startService()
        self.addCleanup(rotation.stopService)

        def values() -> tuple[float | None, float | None]:
            _, samples = parse(metrics.exposition()[0].decode())
            return samples.get(key("siprecd_key_rotations_total")), samples.get(
                key("siprecd_key_rotation_failures_total")
            )

        self.assertEqual(values(), (0, 0))
        clock.advance(10)
        self.assertEqual(values(), (1, 0))
        with mock.patch.object(store, "rotate", side_effect=OSError(13, "Permission denied")):
            clock.advance(10)
        self.flushLoggedErrors(OSError)
        self.assertEqual(values(), (1, 1))
        clock.advance(1)  # the retry
        self.assertEqual(values(), (2, 1))

    def test_absent_without_rotation(self) -> None:
        body, _ = Metrics(process=False).exposition()
        self.assertNotIn(b"key_rotation", body)


class ResourceTests(SynchronousTestCase):
    def render(self, accept: bytes | None = None) -> tuple[DummyRequest, bytes]:
        metrics = Metrics(process=False)
        metrics.sip_request("OPTIONS", "UDP")
        request = DummyRequest([b""])
        if accept is not None:
            request.requestHeaders.setRawHeaders(b"accept", [accept])
        body = MetricsResource(metrics).render_GET(request)
        return request, body

    def test_prometheus_text(self) -> None:
        request, body = self.render()
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [PROMETHEUS_TEXT.encode()])
        self.assertIn(b'siprecd_sip_requests_total{method="OPTIONS",transport="UDP"} 1.0', body)

    def test_openmetrics(self) -> None:
        request, body = self.render(b"application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        [content_type] = request.responseHeaders.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"application/openmetrics-text; version=1.0.0"), content_type)
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_collection_failure_is_a_500(self) -> None:
        metrics = Metrics(process=False)
        request = DummyRequest([b""])
        with mock.patch.object(metrics, "exposition", side_effect=RuntimeError("bug")):
            body = MetricsResource(metrics).render_GET(request)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(request.responseCode, 500)
        self.assertIn(b"failed", body)

