"""One stream's DTLS associations across offers, against a real DTLS peer endpoint."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.security.certificate import generate_certificate
from siprecd.security.dtls import DTLSContext, DTLSEndpoint, DTLSRole, SRTPKeys
from siprecd.security.dtls_sdp import DTLSAnswer, DTLSOffer, plan_answer
from siprecd.security.dtls_stream import DTLSSettings, StreamDTLS

SRC = ("127.0.0.1", 4000)


class Peer:
    """The SRC's DTLS side: an endpoint of its own certificate."""

    def __init__(self, clock: Clock, role: DTLSRole) -> None:
        self.certificate = generate_certificate()
        self.context = DTLSContext(self.certificate)
        self.clock = clock
        self.role = role
        self.outbox: list[bytes] = []
        self.keys: list[SRTPKeys] = []
        self.endpoint: DTLSEndpoint | None = None

    def offer(self, setup: str = "actpass", tls_id: str | None = None) -> DTLSOffer:
        return DTLSOffer((self.certificate.fingerprint(),), setup, tls_id)

    def connect(self, srs_fingerprint) -> None:
        self.endpoint = DTLSEndpoint(
            self.context, role=self.role, remote_fingerprints=[srs_fingerprint], send=self.outbox.append,
            clock=self.clock, on_keys=self.keys.append, on_failure=lambda reason: None,
        )
        self.endpoint.start()


def exchange(
    test: SynchronousTestCase,
    sent: list[tuple[bytes, tuple[str, int]]],
    peer: Peer,
    to_srs: Callable[[bytes], object],
    address: tuple[str, int],
    turn: Callable[[], object] = lambda: None,
) -> None:
    """Carry datagrams both ways until both sides are quiet: what the SRS ``sent`` (to
    ``address``, checked) to the peer's endpoint, and what the peer sent through ``to_srs``.
    ``turn`` runs first in every round (a clock step, say)."""
    for _ in range(10):
        turn()
        if not (sent or peer.outbox):
            return
        for data, addr in sent:
            test.assertEqual(addr, address)
            peer.endpoint.datagram_received(data)
        sent.clear()
        for data in peer.outbox:
            to_srs(data)
        peer.outbox.clear()


class StreamDTLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.srs_context = DTLSContext(generate_certificate())
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.installed: list[SRTPKeys] = []
        self.failures: list[str] = []
        self.stream = StreamDTLS(
            DTLSSettings(self.srs_context, self.clock, handshake_timeout=20),
            write=lambda data, addr: self.sent.append((data, addr)),
            install=self.installed.append,
            on_failure=self.failures.append,
        )

    def tearDown(self) -> None:
        self.stream.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def exchange(self, peer: Peer, source=SRC) -> None:
        exchange(self, self.sent, peer, lambda data: self.stream.datagram_received(data, source), source)

    def start(self, offer: DTLSOffer, remote=SRC) -> DTLSAnswer:
        answer = plan_answer(offer, preferred=DTLSRole.ACTIVE, fingerprint=self.srs_context.fingerprint())
        self.stream.start(offer, answer, remote)
        return answer

    def test_active_srs_handshakes_towards_the_offer_address(self) -> None:
        peer = Peer(self.clock, DTLSRole.PASSIVE)
        answer = self.start(peer.offer())
        self.assertEqual((answer.role, answer.setup), (DTLSRole.ACTIVE, "active"))
        self.assertEqual(self.sent, [])  # nothing before the answer has gone out
        self.clock.advance(0)
        self.assertEqual(len(self.sent), 1)  # the ClientHello
        peer.connect(self.srs_context.fingerprint())
        self.exchange(peer)
        [keys] = self.installed
        self.assertEqual(keys.remote_key, peer.keys[0].local_key)
        info = self.stream.to_json()
        self.assertEqual((info["role"], info["state"], info["profile"]), ("active", "connected", "SRTP_AES128_CM_SHA1_80"))
        self.assertNotIn(keys.remote_key.hex(), repr(info))
        peer.endpoint.close()

    def test_passive_srs_waits_then_a_new_association_rekeys(self) -> None:
        peer = Peer(self.clock, DTLSRole.ACTIVE)
        answer = self.start(peer.offer("active", "tls-id-one-0123456789"))
        self.assertEqual(answer.setup, "passive")
        self.clock.advance(0)
        self.assertEqual(self.sent, [])
        peer.connect(self.srs_context.fingerprint())
        self.exchange(peer)
        self.assertEqual(len(self.installed), 1)
        first = self.stream.endpoint
        self.start(peer.offer("active", "tls-id-two-0123456789"))
        self.assertIsNot(self.stream.endpoint, first)
        self.assertEqual(first.state, "closed")
        old = peer.endpoint
        peer.connect(self.srs_context.fingerprint())
        self.exchange(peer)
        self.assertEqual(len(self.installed), 2)
        self.assertNotEqual(self.installed[0].remote_key, self.installed[1].remote_key)
        self.assertEqual(self.stream.to_json()["handshakes"], 2)
        old.close()
        peer.endpoint.close()

    def test_closed_before_the_active_start(self) -> None:
        peer = Peer(self.clock, DTLSRole.PASSIVE)
        self.start(peer.offer())
        self.stream.close()
        self.clock.advance(0)
        self.assertEqual(self.sent, [])

    def test_other_sources_are_not_heard(self) -> None:
        peer = Peer(self.clock, DTLSRole.ACTIVE)
        self.start(peer.offer("active"), remote=None)
        peer.connect(self.srs_context.fingerprint())
        self.exchange(peer, source=("127.0.0.1", 4002))  # the peer's real port, not the SDP's
        self.assertEqual(len(self.installed), 1)
        self.stream.datagram_received(b"\x16\xfe\xfd" + b"\x00" * 20, ("127.0.0.9", 1))
        self.assertEqual(self.stream.other_source, 1)
        peer.endpoint.close()

    def test_handshake_failure_is_reported(self) -> None:
        peer = Peer(self.clock, DTLSRole.PASSIVE)
        self.start(peer.offer())
        self.clock.advance(0)
        self.clock.advance(25)
        [reason] = self.failures
        self.assertIn("did not complete within 20 s", reason)
        self.assertEqual(self.stream.to_json()["state"], "failed")

    def test_holdconn_makes_no_connection(self) -> None:
        peer = Peer(self.clock, DTLSRole.PASSIVE)
        answer = self.start(peer.offer("holdconn"))
        self.assertEqual(answer.setup, "holdconn")
        self.clock.advance(0)
        self.assertIsNone(self.stream.endpoint)
        self.stream.datagram_received(b"\x16\xfe\xfd", SRC)
        self.assertEqual(self.stream.other_source, 1)
