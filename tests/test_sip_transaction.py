"""RFC 3261 §17 transactions (with RFC 6026's Accepted state) on a task.Clock."""

from __future__ import annotations

import gc
import weakref

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.sip.message import Request, Response, make_response
from siprecd.sip.source import Source
from siprecd.sip.transaction import (
    MAGIC_COOKIE,
    ServerTransaction,
    State,
    TimerSettings,
    TransactionLayer,
    new_branch,
    server_key,
)

from .sipfakes import FakeConnection, FakeSender, FakeTU, request

UDP = Source("UDP", "192.0.2.1", 5060)

# Timer G / E schedule with T1 = 0.5 and T2 = 4 until 64*T1 = 32.
BACKOFF = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
# The clock moves in steps of EPS (exact in binary floating point) so that every timer fires at
# its own time and the recorded send times are exact.
EPS = 1 / 64


class LayerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sender = FakeSender(self.clock)
        self.tu = FakeTU()
        self.layer = TransactionLayer(self.clock, self.sender, self.tu, TimerSettings())
        self.tcp = Source("TCP", "192.0.2.1", 40000, FakeConnection())

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def advance(self, seconds: float) -> None:
        steps = seconds / EPS
        assert steps == int(steps), seconds
        for _ in range(int(steps)):
            self.clock.advance(EPS)

    def finish(self) -> None:
        """Let every timer run out; nothing may be left behind."""
        self.clock.advance(100)
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def invite(self, source: Source = UDP, **kwargs: object) -> ServerTransaction:
        self.layer.request_received(request("INVITE", **kwargs), source)  # type: ignore[arg-type]
        transaction = self.tu.requests[-1][1]
        assert isinstance(transaction, ServerTransaction)
        return transaction

    def ack_for(self, transaction: ServerTransaction, *, branch: str | None = None) -> Request:
        """The ACK a UAC sends for the transaction's final response."""
        response = transaction.last_response
        assert response is not None
        return request(
            "ACK",
            branch=branch or transaction.request.top_via.branch or "",
            to_tag=response.to.tag,
            cseq=transaction.request.cseq.number,
            call_id=transaction.request.call_id,
        )


class InviteServerTests(LayerTestCase):
    def test_100_trying_at_once(self) -> None:
        transaction = self.invite()
        self.assertEqual([(t, r.status) for t, r, _ in self.sender.responses], [(0, 100)])
        trying = self.sender.responses[0][1]
        self.assertEqual(trying.reason, "Trying")
        self.assertEqual(trying.headers.get("To"), "<sip:srs@example.com>")  # no tag on 100
        self.assertIs(self.sender.responses[0][2], UDP)
        self.assertEqual(transaction.state, State.PROCEEDING)
        self.assertEqual(len(self.tu.requests), 1)
        self.assertEqual(len(self.layer), 1)
        transaction.reply(486, "Busy Here")
        self.finish()

    def test_non_2xx_retransmitted_with_backoff_until_timer_h(self) -> None:
        transaction = self.invite()
        self.advance(0.25)
        transaction.reply(486, "Busy Here")
        self.assertEqual(transaction.state, State.COMPLETED)
        self.advance(32 - EPS)  # to 32.25 - EPS
        self.assertEqual(self.sender.times(486), [0.25] + [0.25 + t for t in BACKOFF])
        self.assertEqual(transaction.state, State.COMPLETED)
        self.advance(EPS)  # timer H at 32.25
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.sender.times(486)), 11)
        self.assertEqual(self.tu.timed_out, [])

    def test_retransmissions_capped_at_t2(self) -> None:
        self.layer.timers = TimerSettings(t1=0.125, t2=0.375, t4=1)
        transaction = self.invite()
        transaction.reply(500, "Server Internal Error")
        self.advance(1.625)
        self.assertEqual(self.sender.times(500), [0, 0.125, 0.375, 0.75, 1.125, 1.5])
        self.finish()

    def test_ack_stops_retransmission_then_timer_i(self) -> None:
        transaction = self.invite()
        transaction.reply(486, "Busy Here")
        self.advance(1.625)
        self.assertEqual(self.sender.times(486), [0, 0.5, 1.5])
        ack = self.ack_for(transaction)
        self.layer.request_received(ack, UDP)
        self.assertEqual(transaction.state, State.CONFIRMED)
        self.assertEqual(self.tu.acks, [])  # the ACK of a non-2xx stays in the transaction
        self.advance(5 - EPS)
        self.assertEqual(transaction.state, State.CONFIRMED)
        self.layer.request_received(ack, UDP)  # retransmitted ACK: absorbed
        self.assertEqual(self.tu.acks, [])
        self.advance(EPS)  # timer I = T4 = 5 s after the ACK
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(self.sender.times(486), [0, 0.5, 1.5])
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_h_without_ack(self) -> None:
        transaction = self.invite()
        transaction.reply(603, "Decline")
        self.advance(32 - EPS)
        self.assertEqual(transaction.state, State.COMPLETED)
        self.advance(EPS)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliable_no_retransmissions_and_timer_i_zero(self) -> None:
        transaction = self.invite(self.tcp)
        transaction.reply(486, "Busy Here")
        self.advance(10)
        self.assertEqual(self.sender.statuses(), [100, 486])
        self.layer.request_received(self.ack_for(transaction), self.tcp)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliable_timer_h(self) -> None:
        transaction = self.invite(self.tcp)
        transaction.reply(486, "Busy Here")
        self.advance(32 - EPS)
        self.assertEqual(transaction.state, State.COMPLETED)
        self.advance(EPS)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(self.sender.statuses(), [100, 486])

    def test_retransmitted_invite_in_proceeding_resends_last_provisional(self) -> None:
        transaction = self.invite()
        again = request("INVITE")
        self.layer.request_received(again, UDP)
        self.assertEqual(self.sender.statuses(), [100, 100])
        transaction.reply(180, "Ringing")
        self.assertEqual(transaction.state, State.PROCEEDING)
        self.layer.request_received(again, UDP)
        self.assertEqual(self.sender.statuses(), [100, 100, 180, 180])
        self.assertIs(self.sender.responses[-1][1], self.sender.responses[-2][1])
        self.assertEqual(len(self.tu.requests), 1)  # retransmissions never reach the TU
        transaction.reply(486, "Busy Here")
        self.finish()

    def test_retransmitted_invite_in_completed_resends_final(self) -> None:
        transaction = self.invite()
        transaction.reply(486, "Busy Here")
        self.advance(0.25)
        self.layer.request_received(request("INVITE"), UDP)
        self.assertEqual(self.sender.times(486), [0, 0.25])
        self.assertEqual(len(self.tu.requests), 1)
        self.finish()

    def test_second_final_response_is_refused(self) -> None:
        transaction = self.invite()
        transaction.reply(486, "Busy Here")
        transaction.reply(200, "OK")
        transaction.reply(180, "Ringing")
        self.assertEqual(self.sender.statuses(), [100, 486])
        self.finish()

    def test_responses_carry_the_to_tag(self) -> None:
        transaction = self.invite()
        transaction.to_tag = "local"
        transaction.reply(180, "Ringing")
        transaction.reply(486, "Busy Here")
        self.assertEqual([r.to.tag for _, r, _ in self.sender.responses], [None, "local", "local"])
        self.finish()

    def test_existing_to_tag_is_the_transaction_tag(self) -> None:
        transaction = self.invite(to_tag="already")
        self.assertEqual(transaction.to_tag, "already")
        transaction.reply(481, "Call/Transaction Does Not Exist")
        self.finish()


class Invite2xxTests(LayerTestCase):
    def test_2xx_retransmitted_until_ack(self) -> None:
        transaction = self.invite()
        transaction.to_tag = "srs-tag"
        transaction.reply(200, "OK")
        self.assertEqual(transaction.state, State.ACCEPTED)
        self.advance(4)
        self.assertEqual(self.sender.times(200), [0, 0.5, 1.5, 3.5])
        # The retransmitted INVITE is absorbed in Accepted (RFC 6026).
        self.layer.request_received(request("INVITE"), UDP)
        self.assertEqual(len(self.sender.times(200)), 4)
        self.assertEqual(len(self.tu.requests), 1)
        ack = request("ACK", branch=new_branch(), to_tag="srs-tag")
        self.layer.request_received(ack, UDP)
        self.assertEqual(self.tu.acks, [(ack, UDP)])
        # RFC 6026: Accepted until timer L, absorbing late INVITE copies, then terminated.
        self.assertEqual(transaction.state, State.ACCEPTED)
        self.layer.request_received(request("INVITE"), UDP)
        self.assertEqual(len(self.tu.requests), 1)
        self.advance(40)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.sender.times(200), [0, 0.5, 1.5, 3.5])
        self.assertEqual(self.tu.timed_out, [])
        self.assertEqual(self.tu.timed_out, [])

    def test_ack_with_other_to_tag_does_not_stop_2xx(self) -> None:
        transaction = self.invite()
        transaction.to_tag = "srs-tag"
        transaction.reply(200, "OK")
        stray = request("ACK", branch=new_branch(), to_tag="other")
        self.layer.request_received(stray, UDP)
        self.assertEqual(self.tu.acks, [(stray, UDP)])  # the TU decides what a stray ACK means
        self.assertEqual(transaction.state, State.ACCEPTED)
        self.advance(1)
        self.assertEqual(self.sender.times(200), [0, 0.5])
        self.finish()

    def test_ack_reusing_the_invite_branch(self) -> None:
        # Some peers (and every RFC 2543 peer) send the 2xx ACK with the INVITE's branch; in
        # Accepted such an ACK goes to the TU (RFC 6026 §7.1) and ends the retransmissions.
        transaction = self.invite()
        transaction.to_tag = "srs-tag"
        transaction.reply(200, "OK")
        self.advance(1)
        ack = self.ack_for(transaction)
        self.assertEqual(ack.top_via.branch, transaction.request.top_via.branch)
        self.layer.request_received(ack, UDP)
        self.assertEqual(self.tu.acks, [(ack, UDP)])
        self.assertEqual(transaction.state, State.ACCEPTED)
        self.advance(40)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(self.sender.times(200), [0, 0.5])
        self.assertEqual(self.tu.timed_out, [])

    def test_acknowledged_transaction_lets_go_of_its_messages(self) -> None:
        # Accepted lasts 64*T1 after the 2xx; once ACKed, the INVITE (multipart body, parsed
        # headers) and the 2xx (SDP) are not needed for what is left: absorbing copies.
        invite = request("INVITE", branch=new_branch())
        self.layer.request_received(invite, UDP)
        transaction = self.tu.requests[-1][1]
        transaction.to_tag = "srs-tag"
        transaction.reply(200, "OK")
        ack = self.ack_for(transaction)
        held = weakref.ref(transaction.request)
        self.layer.request_received(ack, UDP)
        del invite
        self.tu.requests.clear()  # the fake TU's record of it
        gc.collect()
        self.assertIsNone(held())
        self.assertIsNone(transaction.last_response)
        self.assertRaises(RuntimeError, lambda: transaction.request)
        self.assertEqual((transaction.method, transaction.call_id), ("INVITE", ack.call_id))
        # Copies of the INVITE are still absorbed, ACK copies still reach the TU, and a late
        # CANCEL still finds the transaction, final already sent: nothing is resent.
        copy = request("INVITE", branch=ack.top_via.branch or "")
        self.layer.request_received(copy, UDP)
        self.layer.request_received(ack, UDP)
        self.assertEqual(self.tu.requests, [])
        self.assertEqual(self.tu.acks, [(ack, UDP), (ack, UDP)])
        self.assertIs(self.layer.find_invite(request("CANCEL", branch=ack.top_via.branch or "")), transaction)
        self.assertTrue(transaction.final_sent)
        transaction.respond(make_response(copy, 500, "Late"))  # refused, logged, no crash
        self.advance(40)
        self.assertEqual(self.sender.statuses(), [100, 200])
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(self.tu.timed_out, [])

    def test_unacknowledged_transaction_keeps_the_2xx_for_retransmission(self) -> None:
        transaction = self.invite()
        transaction.reply(200, "OK")
        self.advance(1)
        self.assertIsNotNone(transaction.last_response)
        self.assertEqual(transaction.request.method, "INVITE")
        self.assertEqual(self.sender.times(200), [0, 0.5])
        self.finish()

    def test_timer_l_without_ack(self) -> None:
        transaction = self.invite()
        transaction.reply(200, "OK")
        self.advance(32 - EPS)
        self.assertEqual(self.tu.timed_out, [])
        self.assertEqual(self.sender.times(200), [0] + BACKOFF)
        self.advance(EPS)
        self.assertEqual(self.tu.timed_out, [transaction])
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliable_2xx_not_retransmitted(self) -> None:
        transaction = self.invite(self.tcp)
        transaction.reply(200, "OK")
        self.advance(10)
        self.assertEqual(self.sender.statuses(), [100, 200])
        self.layer.request_received(
            request("ACK", branch=new_branch(), to_tag=transaction.to_tag), self.tcp
        )
        self.assertEqual(transaction.state, State.ACCEPTED)
        self.assertEqual(len(self.tu.acks), 1)
        self.advance(40)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(self.sender.statuses(), [100, 200])
        self.assertEqual(self.tu.timed_out, [])

    def test_reliable_timer_l(self) -> None:
        transaction = self.invite(self.tcp)
        transaction.reply(200, "OK")
        self.advance(32)
        self.assertEqual(self.tu.timed_out, [transaction])
        self.assertEqual(self.sender.statuses(), [100, 200])

    def test_ack_without_transaction_goes_to_tu(self) -> None:
        ack = request("ACK", to_tag="x")
        self.layer.request_received(ack, UDP)
        self.assertEqual(self.tu.acks, [(ack, UDP)])
        self.assertEqual(self.tu.requests, [])
        self.assertEqual(self.sender.responses, [])


class NonInviteServerTests(LayerTestCase):
    def test_final_then_retransmission_then_timer_j(self) -> None:
        self.layer.request_received(request("OPTIONS"), UDP)
        self.assertEqual(self.sender.responses, [])  # no 100 for non-INVITE
        transaction = self.tu.requests[0][1]
        self.assertEqual(transaction.state, State.TRYING)
        self.layer.request_received(request("OPTIONS"), UDP)  # nothing to resend yet
        self.assertEqual(self.sender.responses, [])
        self.advance(1)
        transaction.reply(200, "OK")
        self.assertEqual(transaction.state, State.COMPLETED)
        self.advance(1)
        self.layer.request_received(request("OPTIONS"), UDP)
        self.assertEqual(self.sender.times(200), [1, 2])
        self.assertEqual(len(self.tu.requests), 1)
        self.advance(31 - EPS)  # timer J = 64*T1 after the final response
        self.assertEqual(transaction.state, State.COMPLETED)
        self.advance(EPS)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # A later copy is a new request for the TU.
        self.layer.request_received(request("OPTIONS"), UDP)
        self.assertEqual(len(self.tu.requests), 2)
        self.tu.requests[1][1].reply(200, "OK")
        self.finish()

    def test_no_final_retransmission_timer(self) -> None:
        self.layer.request_received(request("OPTIONS"), UDP)
        self.tu.requests[0][1].reply(200, "OK")
        self.advance(31)
        self.assertEqual(self.sender.times(200), [0])
        self.finish()

    def test_provisional_resent_in_proceeding(self) -> None:
        self.layer.request_received(request("BYE", to_tag="t"), UDP)
        transaction = self.tu.requests[0][1]
        transaction.reply(100, "Trying")
        self.assertEqual(transaction.state, State.PROCEEDING)
        self.layer.request_received(request("BYE", to_tag="t"), UDP)
        self.assertEqual(self.sender.statuses(), [100, 100])
        transaction.reply(200, "OK")
        self.finish()

    def test_reliable_timer_j_zero(self) -> None:
        self.layer.request_received(request("OPTIONS"), self.tcp)
        transaction = self.tu.requests[0][1]
        transaction.reply(200, "OK")
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_distinct_branches_are_distinct_transactions(self) -> None:
        self.layer.request_received(request("OPTIONS", branch="z9hG4bK-a"), UDP)
        self.layer.request_received(request("OPTIONS", branch="z9hG4bK-b"), UDP)
        self.layer.request_received(request("OPTIONS", branch="z9hG4bK-a", via_host="192.0.2.9"), UDP)
        self.assertEqual(len(self.tu.requests), 3)
        self.assertEqual(len(self.layer), 3)
        for _, transaction in self.tu.requests:
            transaction.reply(200, "OK")
        self.finish()

    def test_stop_drops_everything(self) -> None:
        self.layer.request_received(request("OPTIONS"), UDP)
        self.invite(branch="z9hG4bK-inv").reply(486, "Busy Here")
        self.layer.stop()
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RFC2543Tests(LayerTestCase):
    def test_key_without_magic_cookie(self) -> None:
        old = request("INVITE", branch="1234")
        self.assertEqual(server_key(old)[0], "2543")
        new = request("INVITE", branch=MAGIC_COOKIE + "x")
        self.assertEqual(server_key(new), (MAGIC_COOKIE + "x", "192.0.2.1", "5060", "INVITE"))
        no_branch = request("INVITE", via="SIP/2.0/UDP 192.0.2.1")
        self.assertEqual(server_key(no_branch)[0], "2543")

    def test_retransmission_cancel_and_ack_match(self) -> None:
        via = "SIP/2.0/UDP 192.0.2.1:5060"
        transaction = self.invite(via=via)
        self.layer.request_received(request("INVITE", via=via), UDP)
        self.assertEqual(self.sender.statuses(), [100, 100])
        self.assertEqual(len(self.tu.requests), 1)
        cancel = request("CANCEL", via=via)
        self.assertIs(self.layer.find_invite(cancel), transaction)
        # Another CSeq is another transaction.
        self.layer.request_received(request("INVITE", via=via, cseq=2), UDP)
        self.assertEqual(len(self.tu.requests), 2)
        self.assertIsNot(self.tu.requests[1][1], transaction)
        self.tu.requests[1][1].reply(486, "Busy Here")
        transaction.to_tag = "t1"
        transaction.reply(486, "Busy Here")
        ack = request("ACK", via=via, to_tag="t1")
        self.layer.request_received(ack, UDP)
        self.assertEqual(transaction.state, State.CONFIRMED)
        self.assertEqual(self.tu.acks, [])
        self.finish()

    def test_2xx_ack_with_same_via(self) -> None:
        via = "SIP/2.0/UDP 192.0.2.1:5060"
        transaction = self.invite(via=via)
        transaction.to_tag = "t1"
        transaction.reply(200, "OK")
        ack = request("ACK", via=via, to_tag="t1")
        self.layer.request_received(ack, UDP)
        self.assertEqual(self.tu.acks, [(ack, UDP)])
        self.assertEqual(transaction.state, State.ACCEPTED)
        self.advance(40)
        self.assertEqual(transaction.state, State.TERMINATED)
        self.assertEqual(self.sender.times(200), [0])
        self.assertEqual(self.tu.timed_out, [])

    def test_cancel_of_other_invite_not_found(self) -> None:
        self.invite(branch="z9hG4bK-inv").reply(486, "Busy Here")
        self.assertIsNone(self.layer.find_invite(request("CANCEL", branch="z9hG4bK-other")))
        self.assertIsNotNone(self.layer.find_invite(request("CANCEL", branch="z9hG4bK-inv")))
        self.finish()


class ClientTransactionTests(LayerTestCase):
    def bye(self) -> Request:
        return request("BYE", branch=new_branch(), to_tag="t", cseq=1)

    def results(self, deferred: object) -> list[Response]:
        out: list[Response] = []
        deferred.addCallback(out.append)  # type: ignore[attr-defined]
        return out

    def request_times(self) -> list[float]:
        return [t for t, _, _ in self.sender.requests]

    def test_timer_e_backoff_and_timer_f(self) -> None:
        bye = self.bye()
        results = self.results(self.layer.send_request(bye, UDP))
        self.assertEqual(len(self.layer), 1)
        self.advance(32 - EPS)
        self.assertEqual(self.request_times(), [0] + BACKOFF)
        self.assertTrue(all(r is bye for _, r, _ in self.sender.requests))
        self.assertEqual(results, [])
        self.advance(EPS)
        self.assertEqual(len(results), 1)
        self.assertEqual(results[0].status, 408)
        self.assertEqual(results[0].reason, "Request Timeout")
        self.assertEqual(results[0].cseq.method, "BYE")
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_e_at_t2_after_provisional(self) -> None:
        bye = self.bye()
        results = self.results(self.layer.send_request(bye, UDP))
        self.advance(1)
        self.layer.response_received(make_response(bye, 100, "Trying"), UDP)
        self.advance(31)
        self.assertEqual(self.request_times(), [0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5])
        self.assertEqual([r.status for r in results], [408])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_final_response_then_timer_k(self) -> None:
        bye = self.bye()
        results = self.results(self.layer.send_request(bye, UDP))
        self.advance(0.75)
        ok = make_response(bye, 200, "OK", to_tag="t")
        self.layer.response_received(ok, UDP)
        self.assertEqual(results, [ok])
        self.assertEqual(len(self.layer), 1)  # timer K absorbs retransmitted responses
        self.layer.response_received(make_response(bye, 200, "OK", to_tag="t"), UDP)
        self.assertEqual(results, [ok])
        self.advance(5 - EPS)
        self.assertEqual(len(self.layer), 1)
        self.advance(EPS)  # K = T4 = 5 s
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.request_times(), [0, 0.5])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliable(self) -> None:
        bye = self.bye()
        results = self.results(self.layer.send_request(bye, self.tcp))
        self.advance(20)
        self.assertEqual(self.request_times(), [0])  # no timer E
        self.layer.response_received(make_response(bye, 481, "Call/Transaction Does Not Exist"), self.tcp)
        self.assertEqual([r.status for r in results], [481])
        self.assertEqual(len(self.layer), 0)  # K = 0
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliable_timer_f(self) -> None:
        results = self.results(self.layer.send_request(self.bye(), self.tcp))
        self.advance(32)
        self.assertEqual([r.status for r in results], [408])

    def test_stray_response_ignored(self) -> None:
        bye = self.bye()
        results = self.results(self.layer.send_request(bye, UDP))
        other = request("BYE", branch=new_branch(), to_tag="t")
        self.layer.response_received(make_response(other, 200, "OK"), UDP)
        # Same branch, other method: not this transaction either.
        cancel = request("CANCEL", branch=bye.top_via.branch or "", to_tag="t")
        self.layer.response_received(make_response(cancel, 200, "OK"), UDP)
        self.assertEqual(results, [])
        self.layer.response_received(make_response(bye, 200, "OK"), UDP)
        self.assertEqual(len(results), 1)
        self.finish()

    def test_transport_failure_and_stop(self) -> None:
        first = self.results(self.layer.send_request(self.bye(), UDP))
        second = self.results(self.layer.send_request(self.bye(), UDP))
        self.assertEqual(len(self.layer), 2)
        list(self.layer._client.values())[0].transport_failed("connection refused")
        self.assertEqual([(r.status, r.reason) for r in first], [(503, "transport error: connection refused")])
        self.layer.stop()
        self.assertEqual([(r.status, r.reason) for r in second], [(503, "shutting down")])
        self.assertEqual(len(self.layer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_new_branch(self) -> None:
        branches = {new_branch() for _ in range(100)}
        self.assertEqual(len(branches), 100)
        self.assertTrue(all(b.startswith("z9hG4bK") and len(b) == 23 for b in branches))

    def test_timer_settings(self) -> None:
        self.assertEqual(TimerSettings(), TimerSettings(0.5, 4.0, 5.0))
        self.assertEqual(TimerSettings(t1=0.25).timeout, 16)
