"""Quick checks of the benchmark's generator and measurement helpers (bench/), so they cannot
rot silently; the benchmark itself (python -m bench) is not part of the suite."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pylibsrtp
from twisted.trial import unittest

from bench import probes, sip
from bench.csender import SPARE_PACKETS, packets_needed, parse_report, precompute
from bench.generator import Lag, Load, LoadPlan, Worker, merge_reports
from bench.rtp import PAYLOAD, Jitter, StreamSender, parse_header, stream_key
from siprecd.media.rtp import parse_rtp
from siprecd.sdp import parse as parse_sdp
from siprecd.sip.message import Request, parse_message

PROC_NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 0100007F:9C40 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0
  101: 0100007F:9C42 00000000:0000 07 00000000:00000340 00:00000000 00000000     0        0 2 2 0000000000000000 3
  102: 0100007F:1F90 00000000:0000 07 00000000:00000100 00:00000000 00000000     0        0 3 2 0000000000000000 0
"""


class RTPTests(unittest.TestCase):
    def test_packets_parse_as_rtp_and_advance(self) -> None:
        sender = StreamSender(0x1234, seq=65535, timestamp=2**32 - 80)
        first, second = sender.next_packet(), sender.next_packet()
        a, b = parse_rtp(first), parse_rtp(second)
        self.assertEqual((a.payload_type, a.sequence, a.ssrc, a.payload), (0, 65535, 0x1234, PAYLOAD))
        self.assertEqual((b.sequence, b.timestamp), (0, 80))  # both wrap
        self.assertEqual(parse_header(second), (0, 0, 80, 0x1234))
        self.assertEqual(sender.sent, 2)

    def test_srtp_packets_unprotect_with_the_offered_key(self) -> None:
        key = stream_key(b"7-0")
        packet = StreamSender(99, key=key).next_packet()
        self.assertEqual(len(packet), 12 + 160 + 10)  # HMAC-SHA1-80 tag
        inbound = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self.assertEqual(parse_rtp(inbound.unprotect(packet)).payload, PAYLOAD)

    def test_short_header_is_an_error_that_says_so(self) -> None:
        with self.assertRaisesRegex(ValueError, "5 bytes"):
            parse_header(b"12345")

    def test_jitter_of_a_steady_stream_is_zero_and_grows_with_delay(self) -> None:
        jitter = Jitter()
        for n in range(10):
            jitter.update(n * 0.02, n * 160)
        self.assertEqual(jitter.milliseconds, 0.0)
        jitter.update(10 * 0.02 + 0.016, 10 * 160)  # 16 ms late: J += 16/16 ms
        self.assertAlmostEqual(jitter.milliseconds, 1.0)


class PrecomputeTests(unittest.TestCase):
    def test_srtp_packets_decrypt_under_the_key_consecutive_without_repeats(self) -> None:
        """Across the sequence number and timestamp wrap (and so the SRTP rollover counter):
        each packet unprotects under the offered key, seq and ts advance by 1 and 160, no
        (ROC, seq) repeats (siprecd's replay protection would drop it)."""
        key = stream_key(b"pre")
        sender = StreamSender(0xABC, seq=65530, timestamp=2**32 - 480, key=key)
        data = precompute(sender, 20)
        self.assertEqual(sender.sent, 0)  # built, not sent
        size = 12 + 160 + 10
        self.assertEqual(len(data), 20 * size)
        inbound = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        packets = [parse_rtp(inbound.unprotect(data[i:i + size])) for i in range(0, len(data), size)]
        self.assertEqual([p.sequence for p in packets], [(65530 + i) & 0xFFFF for i in range(20)])
        self.assertEqual([p.timestamp for p in packets], [(2**32 - 480 + 160 * i) & 0xFFFFFFFF for i in range(20)])
        self.assertEqual({(p.ssrc, p.payload) for p in packets}, {(0xABC, PAYLOAD)})
        self.assertEqual(len({data[i:i + size] for i in range(0, len(data), size)}), 20)
        # The stream goes on where the precomputed packets end.
        self.assertEqual(parse_rtp(inbound.unprotect(sender.next_packet())).sequence, (65530 + 20) & 0xFFFF)

    def test_plain_packets_and_count(self) -> None:
        data = precompute(StreamSender(1, seq=7), 3)
        self.assertEqual([parse_header(data[i:i + 172])[1] for i in (0, 172, 344)], [7, 8, 9])
        self.assertEqual(packets_needed(10.0), 500 + SPARE_PACKETS)

    def test_sender_report_parses_and_rejects_garbage(self) -> None:
        report = parse_report("sent 9 errors 1 exhausted 0 lag 5 2 1 1 0 0 0 worst_ns 3000000 cpu_ns 2000 rt 1")
        self.assertEqual((report.sent, report.errors, report.lag_buckets, report.worst, report.cpu, report.realtime),
                         (9, 1, [5, 2, 1, 1, 0, 0, 0], 0.003, 2e-06, True))
        with self.assertRaisesRegex(ValueError, "malformed: 'sent x'"):
            parse_report("sent x")


class SIPTests(unittest.TestCase):
    def test_invite_is_a_siprec_offer_with_keys(self) -> None:
        dialog = sip.Dialog("call-1", ("127.0.0.1", 5070), ("127.0.0.1", 5060))
        message = parse_message(dialog.invite(sip.offer("127.0.0.1", 30000, (stream_key(b"a"), None))))
        self.assertIsInstance(message, Request)
        self.assertIn("siprec", message.headers.get("Require", ""))
        self.assertIn("+sip.src", message.headers.get("Contact", ""))

    def test_offer_labels_profiles_and_crypto(self) -> None:
        offer = parse_sdp(sip.offer("127.0.0.1", 30000, (stream_key(b"a"), None)).encode())
        self.assertEqual([(m.port, m.label, m.proto) for m in offer.media],
                         [(30000, "1", "RTP/SAVP"), (30002, "2", "RTP/AVP")])
        self.assertIn("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:", sip.offer("h", 1, (stream_key(b"a"), None)))

    def test_reply_fields(self) -> None:
        data = (b"SIP/2.0 200 OK\r\nVia: x\r\nTo: <sip:srs@h>;tag=abc\r\ni: call-1\r\nCSeq: 1 INVITE\r\n"
                b"Content-Length: 50\r\n\r\nv=0\r\nm=audio 20000 RTP/AVP 0\r\nm=audio 0 RTP/SAVP 0\r\n")
        reply = sip.parse_reply(data)
        assert reply is not None
        self.assertEqual((reply.status, reply.call_id, reply.cseq, reply.method), (200, "call-1", 1, "INVITE"))
        self.assertEqual(reply.to, "To: <sip:srs@h>;tag=abc")
        self.assertEqual(reply.ports, (20000, 0))
        self.assertIsNone(sip.parse_reply(b"INVITE sip:x SIP/2.0\r\n\r\n"))


class LagTests(unittest.TestCase):
    def test_buckets_fractions_and_merge(self) -> None:
        lag = Lag()
        lag.record(0.0005, 98)
        lag.record(0.007, 1)
        lag.record(0.2, 1)
        self.assertAlmostEqual(lag.late_fraction(5), 0.02)
        self.assertEqual(lag.percentile_ms(0.5), 1)
        self.assertAlmostEqual(lag.percentile_ms(1.0), 200.0)
        other = Lag()
        other.record(0.0001, 100)
        lag.merge(other)
        self.assertAlmostEqual(lag.late_fraction(5), 0.01)
        self.assertEqual(lag.worst, 0.2)


class GeneratorTests(unittest.TestCase):
    def test_plan_arithmetic(self) -> None:
        plan = LoadPlan(calls=10, rate=5, hold=2, workers=3)
        self.assertEqual((plan.streams, plan.ramp, plan.media_end), (20, 1.8, 3.8))
        self.assertEqual(sorted(i for w in range(3) for i in plan.worker_calls(w)), list(range(10)))

    def direct_load(self, sender: str, srtp: bool = False) -> tuple[dict, list[list[bytes]]]:
        """Two worker processes, one call each, straight to four local sockets: the report and
        what each socket received."""
        receivers: list[socket.socket] = []
        base = None
        for attempt in range(50):
            receivers = []
            try:
                first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                first.bind(("127.0.0.1", 0))
                base = first.getsockname()[1]
                receivers.append(first)
                for offset in (2, 4, 6):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind(("127.0.0.1", base + offset))
                    receivers.append(s)
                break
            except OSError:
                for s in receivers:
                    s.close()
        assert base is not None
        self.addCleanup(lambda: [s.close() for s in receivers])
        plan = LoadPlan(calls=2, rate=20, hold=0.5, direct_port=base, workers=2, sender=sender, srtp=srtp)
        load = Load(plan, start_delay=0.1)
        load.start()
        report = load.wait_media_done()
        load.hang_up()
        self.assertEqual(report["streams"], 4)
        self.assertEqual(report["states"], {"active": 2})
        self.assertEqual(report["failures"], {})
        time.sleep(0.05)
        received = []
        for s in receivers:
            s.setblocking(False)
            packets = []
            while True:
                try:
                    packets.append(s.recv(2048))
                except BlockingIOError:
                    break
            received.append(packets)
        return report, received

    def assert_paced_and_complete(self, report: dict, received: list[list[bytes]]) -> None:
        counts = []
        for packets in received:
            seqs = [parse_header(p)[1] for p in packets]
            self.assertEqual(seqs, [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))])
            counts.append(len(seqs))
        self.assertEqual(sum(counts), report["sent"])
        self.assertEqual(sum(report["lag"].buckets), report["sent"])
        # 0.55 s of media per stream at 50/s, give or take the pacing's edges.
        self.assertTrue(all(20 <= n <= 32 for n in counts), counts)

    def test_direct_load_reaches_a_socket_paced(self) -> None:
        self.assert_paced_and_complete(*self.direct_load("python"))

    def test_c_sender_direct_load_reaches_a_socket_paced(self) -> None:
        """The same through the gcc-built sendmmsg sender: every packet it reports sent arrives,
        in order, SRTP that unprotects under each stream's key, with its lateness and CPU."""
        if shutil.which("gcc") is None:
            raise unittest.SkipTest("gcc is not installed: the C media sender is compiled with gcc at run time")
        report, received = self.direct_load("c", srtp=True)
        self.assert_paced_and_complete(report, received)
        self.assertGreater(report["cpu"], 0.0)
        for index, packets in enumerate(received):  # call index // 2, its stream index % 2
            inbound = pylibsrtp.Session(pylibsrtp.Policy(key=stream_key(f"{index // 2}-{index % 2}".encode()),
                                                         ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
            self.assertEqual({parse_rtp(inbound.unprotect(p)).payload for p in packets}, {PAYLOAD})

    def test_unknown_sender_is_refused_by_name(self) -> None:
        with self.assertRaisesRegex(ValueError, "'rust'"):
            Worker(LoadPlan(calls=1, rate=1, hold=1, sender="rust"), 0)

    def test_sip_calls_invite_ack_media_bye(self) -> None:
        self.sip_calls("python")

    def test_c_sender_sip_calls_invite_ack_media_bye(self) -> None:
        if shutil.which("gcc") is None:
            raise unittest.SkipTest("gcc is not installed: the C media sender is compiled with gcc at run time")
        self.sip_calls("c")

    def sip_calls(self, sender: str) -> None:
        """Against a fake SRS (a thread answering every INVITE with a two-port SDP, every BYE
        with 200): calls are set up, media goes to the answered ports, BYEs are answered."""
        srs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srs.bind(("127.0.0.1", 0))
        srs.settimeout(0.2)
        media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        media.bind(("127.0.0.1", 0))
        self.addCleanup(srs.close)
        self.addCleanup(media.close)
        port = media.getsockname()[1]
        seen: list[str] = []
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    data, source = srs.recvfrom(65535)
                except OSError:
                    continue
                request = parse_message(data)
                assert isinstance(request, Request)
                seen.append(request.method)
                if request.method == "ACK":
                    continue
                body = f"v=0\r\nm=audio {port} RTP/AVP 0\r\nm=audio {port} RTP/AVP 0\r\n" if request.method == "INVITE" else ""
                head = [
                    "SIP/2.0 200 OK", f"Via: {request.headers.get('Via')}", f"From: {request.headers.get('From')}",
                    f"To: {request.headers.get('To')};tag=srs", f"Call-ID: {request.call_id}",
                    f"CSeq: {request.headers.get('CSeq')}", f"Content-Length: {len(body)}",
                ]
                srs.sendto(("\r\n".join(head) + "\r\n\r\n" + body).encode(), source)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(stop.set)
        plan = LoadPlan(calls=3, rate=30, hold=0.3, server=srs.getsockname(), workers=2, sender=sender)
        load = Load(plan, start_delay=0.1)
        load.start()
        report = load.wait_media_done()
        self.assertEqual(report["states"], {"active": 3})
        self.assertEqual(report["targets"], [("127.0.0.1", port)] * 6)
        ended = load.hang_up()
        self.assertEqual((ended["states"], ended["failures"]), ({"done": 3}, {}))
        # At least one of each per call (a loaded machine may make a timer retransmit).
        self.assertEqual({m: seen.count(m) >= 3 for m in ("INVITE", "ACK", "BYE")}, dict.fromkeys(("INVITE", "ACK", "BYE"), True))
        media.setblocking(False)
        received = 0
        while True:
            try:
                media.recv(2048)
            except BlockingIOError:
                break
            received += 1
        self.assertEqual(received, report["sent"])
        self.assertGreater(received, 0)

    def test_merge_reports(self) -> None:
        one = {"sent": 5, "streams": 2, "targets": [("h", 1)], "states": {"active": 1},
               "failures": {"x": 1}, "cpu": 0.5, "lag_buckets": [1, 0, 0, 0, 0, 0, 0], "lag_worst": 0.001}
        two = dict(one, failures={"x": 2, "y": 1}, lag_worst=0.003)
        merged = merge_reports([one, two])
        self.assertEqual((merged["sent"], merged["streams"], merged["failures"]), (10, 4, {"x": 3, "y": 1}))
        self.assertEqual(merged["lag"].worst, 0.003)
        self.assertEqual(merged["cpu"], 1.0)


class ProbeTests(unittest.TestCase):
    def test_udp_queues_of_chosen_ports(self) -> None:
        queues = probes.udp_queues([0x9C40, 0x9C42, 1], PROC_NET_UDP)
        self.assertEqual(queues, probes.Queues(sockets=2, queued_bytes=0x340, nonempty=1, drops=3))

    def test_udp_queues_sees_a_real_backlog(self) -> None:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"x" * 100, ("127.0.0.1", port))
        time.sleep(0.01)
        self.assertGreater(probes.udp_queues([port]).queued_bytes, 0)
        receiver.recv(200)
        self.assertEqual(probes.udp_queues([port]).queued_bytes, 0)

    def test_own_cpu_and_rss(self) -> None:
        self.assertGreater(probes.rss_bytes(os.getpid()), 1 << 20)
        self.assertGreaterEqual(probes.cpu_seconds(os.getpid()), 0.0)

    def test_process_tree_counts_the_workers(self) -> None:
        # A parent with two children that allocate and spin: the tree's RSS and CPU include theirs.
        import subprocess
        import sys

        code = ("import os, sys, time\n"
                "blob = bytearray(64 << 20)\n"
                "for i in range(0, len(blob), 4096): blob[i] = 1\n"
                "end = time.process_time() + 0.3\n"
                "while time.process_time() < end: pass\n"
                "print('ready', flush=True); sys.stdin.read()\n")
        parent_code = ("import subprocess, sys\n"
                       f"kids = [subprocess.Popen([sys.executable, '-c', {code!r}], stdout=subprocess.PIPE) for _ in range(2)]\n"
                       "[k.stdout.readline() for k in kids]\n"
                       "print('ready', flush=True); sys.stdin.read()\n")
        parent = subprocess.Popen([sys.executable, "-c", parent_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(parent.wait, 30)
        self.addCleanup(parent.stdin.close)
        self.assertEqual(parent.stdout.readline().strip(), b"ready")
        tree = probes.process_tree(parent.pid)
        self.assertEqual(len(tree), 3)
        self.assertEqual(tree[0], parent.pid)
        self.assertGreater(probes.rss_bytes(parent.pid), probes._own_rss(parent.pid) + (2 * 64 << 20) - (8 << 20))
        self.assertGreaterEqual(probes.cpu_seconds(parent.pid), probes._own_cpu(parent.pid) + 0.5)

    def test_parse_metrics_sums_labels(self) -> None:
        text = ('# HELP x\n# TYPE siprecd_rtp_packets_total counter\n'
                'siprecd_rtp_packets_total{codec="PCMU"} 10.0\nsiprecd_rtp_packets_total{codec="PCMA"} 5.0\n'
                'siprecd_sessions_active 3\n')
        self.assertEqual(probes.parse_metrics(text), {"siprecd_rtp_packets_total": 15.0, "siprecd_sessions_active": 3.0})

    def test_parse_profile(self) -> None:
        text = ("run (twistd.py:1);doRead (udp.py:10);RTPProtocol.datagramReceived (siprecd/media/receiver.py:120) 6\n"
                "run (twistd.py:1);doRead (udp.py:10) 2\n"
                "run (twistd.py:1);Session._tick (siprecd/siprec/session_media.py:170) 2\n")
        profile = probes.parse_profile(text, 100, ("datagramReceived", "doRead"))
        self.assertEqual(profile.samples, 10)
        self.assertEqual(profile.active_seconds, 0.1)
        self.assertEqual(profile.self_time[0], ("RTPProtocol.datagramReceived (receiver.py)", 0.6))
        self.assertEqual(profile.under, {"datagramReceived": 0.6, "doRead": 0.8})


class SummaryTests(unittest.TestCase):
    def test_figures_and_ratios(self) -> None:
        from bench.media import RunResult
        from bench.report import Figures, summary_line

        figures = Figures()
        empty = probes.Queues(1, 0, 0, 0)
        for name, streams, cpu, queued in [("siprecd", 1000, 10.0, 0), ("siprecd", 2000, 9.0, 0), ("siprecd", 3000, 5.0, 99),
                                           ("bare media path", 1000, 5.0, 0), ("count-only", 3000, 3.0, 0)]:
            figures.add(RunResult(name, False, streams, sent=10, counted=10, queues=probes.Queues(1, queued, 0, 0),
                                  cpu_per_packet_us=cpu, jitter_ms=0.75, rss_per_call=64 * 1024))
        self.assertFalse(figures.of("siprecd", False)[2].zero_loss)  # a backlog is a loss
        self.assertEqual(empty.queued_bytes, 0)
        line = summary_line(figures)
        self.assertTrue(line.startswith("summary: RTP siprecd: 2000 streams zero-loss (count-only 3000, 0.67x)"), line)
        self.assertIn("at 1000: CPU 10.00 us/pkt (bare path 5.00, 2.00x), 64 KiB/call, jitter +0.00 ms", line)
        self.assertTrue(line.endswith("generator late>5ms max 0.00%, CPU max 0.00 us/packet (python sender)"), line)
        figures.server_workers = 2
        self.assertTrue(summary_line(figures).startswith("summary (siprecd with 2 workers): RTP siprecd: 2000"))


class CallRateTests(unittest.TestCase):
    def test_srtp_scenario_offers_savp_with_a_key(self) -> None:
        from bench import callrate

        directory = self.mktemp()
        os.makedirs(directory)
        plain = callrate.uac_scenario(directory, srtp=False)
        derived = callrate.uac_scenario(directory, srtp=True)
        with open(plain) as handle:
            self.assertEqual(handle.read().count("RTP/SAVP 0"), 0)
        with open(derived) as handle:
            text = handle.read()
        self.assertEqual(text.count("m=audio [media_port] RTP/SAVP 0"), 1)
        self.assertEqual(text.count("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"), 2)

    def test_stat_file_counts(self) -> None:
        from bench import callrate

        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write("StartTime;SuccessfulCall(C);FailedCall(C);\n1;5;0;\n2;9;1;\n")
        self.assertEqual(callrate.read_stats(path), (9, 1))
        self.assertTrue(callrate.Step(300, 900, 900, 0, 0).passed)
        self.assertFalse(callrate.Step(300, 900, 899, 1, 1).passed)
        self.assertEqual(callrate.best([callrate.Step(100, 1, 1, 0, 0), callrate.Step(200, 2, 1, 1, 1)]), 100)
