"""The UAS core through a SIPStack, with a fake application and fake transports."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siprecd.errors import NotAcceptableHere, ServiceUnavailable, SIPError
from siprecd.sip.dialog import Dialog, DialogState
from siprecd.sip.message import Request, Response, ResponseSpec, make_response
from siprecd.sip.ratelimit import RateLimiter
from siprecd.sip.source import Source
from siprecd.sip.stack import SIPStack
from siprecd.sip.transaction import MAGIC_COOKIE, new_branch
from siprecd.sip.uas import ACCEPTED_TYPES, ALLOWED_METHODS, CoreSettings

from .sipfakes import SRC_HOST, FakeApp, FakeConnection, FakeUDP, build_request

UDP = Source("UDP", SRC_HOST, 5060)


class CoreTestCase(SynchronousTestCase):
    rate_limiter: tuple[float, float] | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = FakeApp()
        limiter = RateLimiter(self.clock, *self.rate_limiter) if self.rate_limiter else None
        self.stack = SIPStack(self.clock, self.app, rate_limiter=limiter)
        self.udp = FakeUDP()
        self.stack.transports.udp = self.udp  # type: ignore[assignment]
        self.stack.core.local_addresses["UDP"] = ("192.0.2.10", 5060)
        self.stack.core.local_addresses["TCP"] = ("192.0.2.10", 5060)
        self.core = self.stack.core

    def tearDown(self) -> None:
        self.drain()
        self.assertEqual(self.stack.counters["internal_errors"], 0)

    def drain(self) -> None:
        """Run every timer out, one second at a time; nothing may be left behind."""
        for _ in range(200):
            self.clock.advance(1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.stack.layer), 0)

    def send(self, method: str = "INVITE", source: Source = UDP, **kwargs: Any) -> None:
        self.stack.receive(build_request(method, **kwargs), source)

    def responses(self, status: int | None = None) -> list[Response]:
        out = self.udp.responses()
        return [r for r in out if status is None or r.status == status]

    def only(self, status: int) -> Response:
        found = self.responses(status)
        self.assertEqual(len(found), 1, f"{status} in {self.udp.statuses()}")
        return found[0]

    def establish(self, **kwargs: Any) -> tuple[Dialog, Response]:
        """INVITE, 200, ACK: a confirmed dialog."""
        self.send("INVITE", **kwargs)
        ok = self.responses(200)[-1]
        self.send(
            "ACK",
            branch=new_branch(),
            to_tag=ok.to.tag,
            cseq=kwargs.get("cseq", 1),
            call_id=kwargs.get("call_id", "call-1@192.0.2.1"),
        )
        dialog = self.app.invites[-1][1]
        return dialog, ok


class OptionsTests(CoreTestCase):
    def test_options_capabilities(self) -> None:
        self.send("OPTIONS")
        self.assertEqual(self.udp.statuses(), [200])
        ok = self.only(200)
        self.assertEqual(ok.reason, "OK")
        self.assertEqual(ok.headers.tokens("Allow"), [m.lower() for m in ALLOWED_METHODS])
        self.assertIn("invite", ok.headers.tokens("Allow"))
        self.assertEqual(
            ok.headers.get_list("Accept"),
            ["application/sdp", "application/rs-metadata+xml", "application/rs-metadata", "multipart/mixed"],
        )
        self.assertEqual(ok.headers.tokens("Supported"), ["siprec", "replaces"])
        self.assertEqual(ok.headers.get("Accept-Encoding"), "identity")
        self.assertEqual(ok.headers.get("Server"), "siprecd")
        self.assertIsNotNone(ok.to.tag)
        self.assertEqual(ok.call_id, "call-1@192.0.2.1")
        self.assertEqual(self.app.invites, [])
        self.assertEqual(self.udp.sent[0][1:], (SRC_HOST, 5060))

    def test_options_with_required_siprec(self) -> None:
        self.send("OPTIONS", extra=[("Require", "SIPREC")])
        self.assertEqual(self.udp.statuses(), [200])

    def test_options_to_tel_uri(self) -> None:
        self.send("OPTIONS", uri="tel:+15550100")
        self.assertEqual(self.udp.statuses(), [200])

    def test_options_not_rate_limited(self) -> None:
        self.core.rate_limiter = RateLimiter(self.clock, 1, 1)
        for i in range(5):
            self.send("OPTIONS", branch=f"z9hG4bK-o{i}")
        self.assertEqual(self.udp.statuses(), [200] * 5)


class GenericCheckTests(CoreTestCase):
    def test_unknown_method_501(self) -> None:
        self.send("FOO")
        response = self.only(501)
        self.assertEqual(response.reason, "method FOO is not implemented")
        self.assertIsNone(response.headers.get("Allow"))
        self.assertIsNotNone(response.to.tag)

    def test_register_405_with_allow(self) -> None:
        self.send("REGISTER")
        response = self.only(405)
        self.assertEqual(response.reason, "REGISTER is not allowed here")
        self.assertEqual(response.headers.get("Allow"), ", ".join(ALLOWED_METHODS))

    def test_require_unknown_420(self) -> None:
        self.send("INVITE", extra=[("Require", "siprec, foo"), ("Require", "Bar")])
        self.assertEqual(self.udp.statuses(), [100, 420])
        response = self.only(420)
        self.assertEqual(response.reason, "Bad Extension")
        self.assertEqual(response.headers.get("Unsupported"), "foo, bar")
        self.assertEqual(self.app.invites, [])

    def test_http_uri_416(self) -> None:
        self.send("INVITE", uri="http://example.com/x")
        response = self.only(416)
        self.assertEqual(response.reason, "URI scheme 'http' is not supported")
        self.assertEqual(self.app.invites, [])

    def test_tel_uri_accepted(self) -> None:
        self.send("INVITE", uri="tel:+15550100")
        self.assertEqual(self.udp.statuses(), [100, 200])
        self.assertEqual(len(self.app.invites), 1)
        self.assertEqual(self.core.contact(None, UDP), "<sip:srs@192.0.2.10:5060>;+sip.srs")

    def test_version_505(self) -> None:
        self.send("OPTIONS", version="SIP/3.0")
        response = self.only(505)
        self.assertEqual(response.reason, "SIP version SIP/3.0 is not supported")
        self.assertEqual(response.version, "SIP/2.0")

    def test_content_encoding_415(self) -> None:
        self.send(
            "INVITE", body=b"\x1f\x8b", content_type="application/sdp", extra=[("Content-Encoding", "gzip")]
        )
        response = self.only(415)
        self.assertEqual(response.reason, "Content-Encoding gzip is not supported")
        self.assertEqual(response.headers.get("Accept-Encoding"), "identity")
        self.assertEqual(self.app.invites, [])

    def test_identity_encoding_accepted(self) -> None:
        self.send("INVITE", body=b"v=0\r\n", content_type="application/sdp", extra=[("e", "identity")])
        self.assertEqual(self.udp.statuses(), [100, 200])

    def test_body_without_content_type_400(self) -> None:
        self.send("INVITE", body=b"v=0\r\n")
        response = self.only(400)
        self.assertEqual(response.reason, "INVITE has a 5-byte body but no Content-Type")
        self.assertEqual(self.app.invites, [])

    def test_content_type_415(self) -> None:
        self.send("INVITE", body=b"hello", content_type="text/plain")
        response = self.only(415)
        self.assertEqual(response.reason, "Content-Type text/plain is not accepted")
        self.assertEqual(response.headers.get_list("Accept"), list(ACCEPTED_TYPES))

    def test_accepted_content_types(self) -> None:
        for index, content_type in enumerate(ACCEPTED_TYPES):
            self.send(
                "INVITE",
                call_id=f"c{index}",
                branch=f"z9hG4bK-{index}",
                body=b"x",
                content_type=content_type + ";boundary=b" if "multipart" in content_type else content_type,
            )
        self.assertEqual(len(self.app.invites), 4)

    def test_accept_without_sdp_406(self) -> None:
        self.send("INVITE", extra=[("Accept", "text/plain")])
        self.assertEqual(self.only(406).reason, "Not Acceptable: the answer is application/sdp, not in the request's Accept")
        self.send("INVITE", call_id="c2", branch="z9hG4bK-2", extra=[("Accept", "application/*")])
        self.assertEqual(len(self.app.invites), 1)

    def test_bye_outside_dialog_481(self) -> None:
        self.send("BYE")
        self.assertEqual(self.only(481).reason, "BYE outside of a dialog")

    def test_error_responses_are_counted(self) -> None:
        self.send("FOO")
        self.send("REGISTER", branch="z9hG4bK-r")
        self.assertEqual(self.core.counters, {"response_501": 1, "response_405": 1})


class InviteTests(CoreTestCase):
    def test_invite_200_with_tag_contact_record_route(self) -> None:
        self.send(
            "INVITE",
            body=b"v=0\r\n",
            content_type="application/sdp",
            extra=[("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
                   ("Record-Route", "<sip:p3.example.com;lr>")],
        )
        self.assertEqual(self.udp.statuses(), [100, 200])
        self.assertEqual(len(self.app.invites), 1)
        request, dialog = self.app.invites[0]
        self.assertIsInstance(request, Request)
        self.assertEqual(request.body, b"v=0\r\n")
        ok = self.only(200)
        self.assertEqual(ok.to.tag, dialog.local_tag)
        self.assertEqual(len(dialog.local_tag), 16)
        self.assertEqual(ok.headers.get("Contact"), "<sip:srs@192.0.2.10:5060>;+sip.srs")
        self.assertEqual(
            ok.headers.get_raw("Record-Route"),
            ["<sip:p1.example.com;lr>, <sip:p2.example.com;lr>", "<sip:p3.example.com;lr>"],
        )
        self.assertEqual(ok.headers.get("Content-Type"), "application/sdp")
        self.assertEqual(ok.body, b"v=0\r\n")
        self.assertIn("siprec", ok.headers.tokens("Supported"))
        self.assertIn("invite", ok.headers.tokens("Allow"))
        self.assertEqual(ok.headers.get("Server"), "siprecd")
        self.assertEqual(ok.headers.get("Via"), f"SIP/2.0/UDP {SRC_HOST}:5060;branch=z9hG4bK-1")
        self.assertEqual(dialog.state, DialogState.CONFIRMED)
        self.assertEqual(dialog.remote_tag, "src-tag")
        self.assertEqual(dialog.route_set, ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>", "<sip:p3.example.com;lr>"])
        self.assertEqual(str(dialog.remote_target), "sip:src@192.0.2.1:5060")
        self.assertEqual(len(self.core.dialogs), 1)
        # 2xx retransmitted until the ACK, which reaches the application.
        self.clock.advance(0.5)
        self.assertEqual(self.udp.statuses(), [100, 200, 200])
        self.send("ACK", branch=new_branch(), to_tag=dialog.local_tag)
        self.assertEqual(self.app.acked_dialogs, [dialog])
        self.clock.advance(10)
        self.assertEqual(self.udp.statuses(), [100, 200, 200])
        self.assertEqual(self.app.ended, [])

    def test_no_ack_hangs_up(self) -> None:
        self.send("INVITE")
        dialog = self.app.invites[0][1]
        for _ in range(32):
            self.clock.advance(1)
        self.assertEqual(self.app.ended, [(dialog, "no ACK for 2xx")])
        byes = self.udp.requests()
        self.assertEqual([r.method for r in byes], ["BYE"])
        self.assertEqual(len(self.core.dialogs), 0)

    def test_app_rejects_with_spec(self) -> None:
        self.app.result = ResponseSpec(488, "Not Acceptable Here", headers=[("Warning", '399 srs "no"')])
        self.send("INVITE", extra=[("Record-Route", "<sip:p;lr>")])
        response = self.only(488)
        self.assertEqual(response.headers.get("Warning"), '399 srs "no"')
        self.assertIsNone(response.headers.get("Contact"))
        self.assertIsNone(response.headers.get("Record-Route"))
        dialog = self.app.invites[0][1]
        self.assertEqual(self.app.ended, [(dialog, "rejected with 488")])
        self.assertEqual(len(self.core.dialogs), 0)
        self.send("ACK", to_tag=response.to.tag)  # same branch: absorbed by the transaction
        self.assertEqual(self.app.acked_dialogs, [])

    def test_app_raises_sip_error(self) -> None:
        self.app.result = NotAcceptableHere('no "audio"')
        self.send("INVITE")
        response = self.only(488)
        self.assertEqual(response.reason, "Not Acceptable Here")
        self.assertEqual(response.headers.get("Warning"), "399 siprecd \"no 'audio'\"")
        self.assertEqual(self.app.ended, [(self.app.invites[0][1], "rejected with 488")])

    def test_app_raises_service_unavailable(self) -> None:
        self.app.result = ServiceUnavailable("no ports", retry_after=7)
        self.send("INVITE")
        response = self.only(503)
        self.assertEqual(response.reason, "no ports")
        self.assertEqual(response.headers.get("Retry-After"), "7")

    def test_deferred_sip_error(self) -> None:
        pending: Deferred[ResponseSpec] = Deferred()
        self.app.result = pending
        self.send("INVITE")
        self.assertEqual(self.udp.statuses(), [100])
        pending.errback(SIPError("busy\r\nInjected: x", code=486))
        response = self.only(486)
        self.assertEqual(response.reason, "busy Injected: x")  # one line, nothing injected
        self.assertIsNone(response.headers.get("Injected"))

    def test_app_raises_other_exception(self) -> None:
        self.app.result = RuntimeError("boom")
        self.send("INVITE")
        response = self.only(500)
        self.assertEqual(response.reason, "Server Internal Error")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.app.ended, [(self.app.invites[0][1], "rejected with 500")])

    def test_deferred_answer(self) -> None:
        pending: Deferred[ResponseSpec] = Deferred()
        self.app.result = pending
        self.send("INVITE")
        self.assertEqual(self.udp.statuses(), [100])
        self.assertEqual(len(self.core.dialogs), 0)
        pending.callback(ResponseSpec(200, "OK"))
        self.assertEqual(self.udp.statuses(), [100, 200])
        self.assertEqual(len(self.core.dialogs), 1)
        self.send("ACK", branch=new_branch(), to_tag=self.only(200).to.tag)

    def test_draining_503(self) -> None:
        self.core.draining = True
        self.send("INVITE")
        response = self.only(503)
        self.assertEqual(response.headers.get("Retry-After"), "30")
        self.assertEqual(self.app.invites, [])

    def test_two_contacts_400(self) -> None:
        self.send("INVITE", contact="<sip:a@192.0.2.1>, <sip:b@192.0.2.1>")
        self.assertEqual(self.only(400).reason, "INVITE must carry one Contact, found 2")

    def test_invite_over_tcp(self) -> None:
        connection = FakeConnection()
        tcp = Source("TCP", SRC_HOST, 40000, connection)
        self.send("INVITE", tcp, transport="TCP")
        self.assertEqual(connection.statuses(), [100, 200])
        self.assertEqual(self.udp.sent, [])
        ok = [m for m in connection.written if b" 200 " in m.split(b"\r\n")[0]][0]
        self.assertIn(b"\r\nContact: <sip:srs@192.0.2.10:5060;transport=tcp>;+sip.srs\r\n", ok)
        self.clock.advance(5)
        self.assertEqual(connection.statuses(), [100, 200])  # no retransmission on TCP
        to_tag = self.app.invites[0][1].local_tag
        self.send("ACK", tcp, transport="TCP", branch=new_branch(), to_tag=to_tag)
        self.assertEqual(len(self.app.acked_dialogs), 1)


class InDialogTests(CoreTestCase):
    def test_bye(self) -> None:
        dialog, ok = self.establish()
        self.send("BYE", branch="z9hG4bK-bye", to_tag=ok.to.tag, cseq=2)
        bye_ok = self.responses(200)[-1]
        self.assertEqual(bye_ok.cseq.method, "BYE")
        self.assertEqual(bye_ok.to.tag, dialog.local_tag)
        self.assertEqual(len(self.app.byes), 1)
        self.assertIs(self.app.byes[0][1], dialog)
        self.assertEqual(self.app.ended, [(dialog, "BYE from the SRC")])
        self.assertEqual(dialog.state, DialogState.TERMINATED)
        self.assertEqual(len(self.core.dialogs), 0)
        # A second BYE (new transaction) finds no dialog.
        self.send("BYE", branch="z9hG4bK-bye2", to_tag=ok.to.tag, cseq=3)
        self.assertEqual(self.responses()[-1].status, 481)
        self.assertEqual(len(self.app.ended), 1)

    def test_bye_app_failure_still_200(self) -> None:
        dialog, ok = self.establish()

        def bye(request: Request, dialog: Dialog) -> None:
            raise ValueError("finalize failed")

        self.app.bye = bye  # type: ignore[method-assign]
        self.send("BYE", branch="z9hG4bK-bye", to_tag=ok.to.tag, cseq=2)
        self.assertEqual(self.responses()[-1].status, 200)
        self.assertEqual(self.app.ended, [(dialog, "BYE from the SRC")])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_bye_unknown_tags_481(self) -> None:
        _, ok = self.establish()
        self.send("BYE", branch="z9hG4bK-b1", to_tag="nope", cseq=2)
        self.send("BYE", branch="z9hG4bK-b2", to_tag=ok.to.tag, from_tag="other", cseq=2)
        self.send("BYE", branch="z9hG4bK-b3", to_tag=ok.to.tag, call_id="other", cseq=2)
        self.assertEqual([r.status for r in self.responses()[-3:]], [481, 481, 481])
        self.assertEqual(self.responses()[-1].reason, "Call/Transaction Does Not Exist")
        self.assertEqual(self.app.byes, [])
        self.assertEqual(self.app.ended, [])

    def test_reinvite(self) -> None:
        dialog, ok = self.establish(cseq=5)
        self.send("INVITE", branch="z9hG4bK-re", to_tag=ok.to.tag, cseq=6, contact="<sip:src@192.0.2.7:5070>")
        self.assertEqual(len(self.app.reinvites), 1)
        self.assertEqual(len(self.app.invites), 1)
        re_ok = self.responses(200)[-1]
        self.assertEqual(re_ok.cseq.number, 6)
        self.assertEqual(re_ok.to.tag, dialog.local_tag)
        self.assertEqual(re_ok.headers.get("Contact"), "<sip:srs@192.0.2.10:5060>;+sip.srs")
        self.assertEqual(str(dialog.remote_target), "sip:src@192.0.2.7:5070")
        self.assertEqual(dialog.remote_cseq, 6)
        self.send("ACK", branch=new_branch(), to_tag=ok.to.tag, cseq=6)
        self.assertEqual(len(self.app.acked_dialogs), 2)

    def test_reinvite_lower_cseq_500(self) -> None:
        dialog, ok = self.establish(cseq=5)
        self.send("INVITE", branch="z9hG4bK-re", to_tag=ok.to.tag, cseq=3)
        response = self.responses()[-1]
        self.assertEqual(response.status, 500)
        self.assertEqual(response.reason, "CSeq 3 is not above the dialog's 5")
        self.assertEqual(self.app.reinvites, [])
        self.assertEqual(dialog.state, DialogState.CONFIRMED)
        self.send("ACK", to_tag=ok.to.tag, branch="z9hG4bK-re", cseq=3)

    def test_reinvite_while_pending_500(self) -> None:
        _, ok = self.establish()
        pending: Deferred[ResponseSpec] = Deferred()
        self.app.reinvite_result = pending
        self.send("INVITE", branch="z9hG4bK-re1", to_tag=ok.to.tag, cseq=2)
        self.send("INVITE", branch="z9hG4bK-re2", to_tag=ok.to.tag, cseq=3)
        response = self.responses()[-1]
        self.assertEqual((response.status, response.cseq.number), (500, 3))
        self.assertEqual(response.headers.get("Retry-After"), "1")
        pending.callback(ResponseSpec(200, "OK"))
        self.assertEqual(self.responses()[-1].cseq.number, 2)
        self.assertEqual(self.responses()[-1].status, 200)
        self.send("ACK", branch=new_branch(), to_tag=ok.to.tag, cseq=2)
        self.send("ACK", to_tag=ok.to.tag, branch="z9hG4bK-re2", cseq=3)

    def test_in_dialog_options_and_update(self) -> None:
        _, ok = self.establish()
        self.send("OPTIONS", branch="z9hG4bK-o", to_tag=ok.to.tag, cseq=2)
        self.assertEqual(self.responses()[-1].status, 200)
        self.assertIn("invite", self.responses()[-1].headers.tokens("Allow"))
        self.send("UPDATE", branch="z9hG4bK-u", to_tag=ok.to.tag, cseq=3)
        update_ok = self.responses()[-1]
        self.assertEqual((update_ok.status, update_ok.cseq.method), (200, "UPDATE"))
        self.assertEqual(update_ok.headers.get("Contact"), "<sip:srs@192.0.2.10:5060>;+sip.srs")
        self.assertEqual(len(self.app.updates), 1)

    def test_in_dialog_requests_never_rate_limited(self) -> None:
        self.core.rate_limiter = RateLimiter(self.clock, 1, 1)
        _, ok = self.establish()
        for cseq in range(2, 8):
            self.send("OPTIONS", branch=f"z9hG4bK-o{cseq}", to_tag=ok.to.tag, cseq=cseq)
        self.send("BYE", branch="z9hG4bK-bye", to_tag=ok.to.tag, cseq=9)
        self.assertEqual([r.status for r in self.responses()[-7:]], [200] * 7)
        self.assertEqual(self.core.counters.get("rate_limited"), None)


class CancelTests(CoreTestCase):
    def test_cancel_pending_invite(self) -> None:
        pending: Deferred[ResponseSpec] = Deferred()
        self.app.result = pending
        self.send("INVITE")
        dialog = self.app.invites[0][1]
        self.send("CANCEL")
        statuses = [(r.status, r.cseq.method) for r in self.responses()]
        self.assertEqual(statuses, [(100, "INVITE"), (200, "CANCEL"), (487, "INVITE")])
        cancel_ok, terminated = self.responses()[1], self.responses()[2]
        self.assertEqual(terminated.reason, "Request Terminated")
        self.assertEqual(terminated.to.tag, dialog.local_tag)
        self.assertEqual(cancel_ok.to.tag, dialog.local_tag)
        self.assertEqual(self.app.ended, [(dialog, "cancelled")])
        self.assertEqual(dialog.state, DialogState.TERMINATED)
        # The late application result is dropped.
        pending.callback(ResponseSpec(200, "OK"))
        self.assertEqual(len(self.responses()), 3)
        self.assertEqual(len(self.core.dialogs), 0)
        self.assertEqual(len(self.app.ended), 1)
        # The 487 is retransmitted until its ACK.
        self.clock.advance(0.5)
        self.assertEqual(len(self.responses(487)), 2)
        self.send("ACK", to_tag=dialog.local_tag)
        self.clock.advance(5)
        self.assertEqual(len(self.responses(487)), 2)
        self.assertEqual(self.app.acked_dialogs, [])

    def test_late_failure_after_cancel_dropped(self) -> None:
        pending: Deferred[ResponseSpec] = Deferred()
        self.app.result = pending
        self.send("INVITE")
        self.send("CANCEL")
        pending.errback(SIPError("late", code=500))
        self.assertEqual([r.status for r in self.responses()], [100, 200, 487])
        self.assertEqual(len(self.app.ended), 1)
        self.send("ACK", to_tag=self.responses()[-1].to.tag)

    def test_cancel_unknown_481(self) -> None:
        self.send("CANCEL")
        response = self.only(481)
        self.assertEqual(response.cseq.method, "CANCEL")
        self.assertEqual(self.app.ended, [])

    def test_cancel_after_final_only_200(self) -> None:
        self.send("INVITE")
        self.send("CANCEL")
        self.assertEqual([(r.status, r.cseq.method) for r in self.responses()],
                         [(100, "INVITE"), (200, "INVITE"), (200, "CANCEL")])
        self.assertEqual(self.app.ended, [])
        self.send("ACK", branch=new_branch(), to_tag=self.responses()[1].to.tag)

    def test_cancel_not_rate_limited_and_ignores_require(self) -> None:
        pending: Deferred[ResponseSpec] = Deferred()
        self.app.result = pending
        self.send("INVITE")
        self.send("CANCEL", extra=[("Require", "foo")])
        self.assertEqual([r.status for r in self.responses()], [100, 200, 487])
        self.send("ACK", to_tag=self.responses()[-1].to.tag)


class RateLimitTests(CoreTestCase):
    rate_limiter = (1.0, 2.0)

    def test_third_invite_within_a_second_503(self) -> None:
        for i in range(3):
            self.send("INVITE", call_id=f"c{i}", branch=f"z9hG4bK-{i}")
        finals = [r for r in self.responses() if r.status >= 200]
        self.assertEqual([(r.status, r.call_id) for r in finals], [(200, "c0"), (200, "c1"), (503, "c2")])
        rejected = finals[2]
        self.assertEqual(rejected.reason, "Rate limit exceeded")
        self.assertEqual(rejected.headers.get("Retry-After"), "1")
        self.assertEqual(len(self.app.invites), 2)
        self.assertEqual(self.core.counters["rate_limited"], 1)
        # Another source is unaffected.
        self.send("INVITE", Source("UDP", "198.51.100.7", 5060), call_id="c3", branch="z9hG4bK-3",
                  via_host="198.51.100.7")
        self.assertEqual(self.responses()[-1].status, 200)
        self.assertEqual(len(self.app.invites), 3)
        # In-dialog requests from the limited source pass.
        self.send("BYE", call_id="c0", branch="z9hG4bK-bye", to_tag=finals[0].to.tag, cseq=2)
        self.assertEqual((self.responses()[-1].status, self.responses()[-1].cseq.method), (200, "BYE"))
        # A second later one token is back.
        self.clock.advance(1)
        self.send("INVITE", call_id="c4", branch="z9hG4bK-4")
        self.assertEqual(self.responses()[-1].status, 200)
        self.send("INVITE", call_id="c5", branch="z9hG4bK-5")
        self.assertEqual(self.responses()[-1].status, 503)


class HangUpTests(CoreTestCase):
    def test_hang_up_over_udp(self) -> None:
        dialog, ok = self.establish()
        results: list[Response] = []
        self.core.hang_up(dialog, "drain").addCallback(results.append)
        self.assertEqual(self.app.ended, [(dialog, "drain")])
        self.assertEqual(len(self.core.dialogs), 0)
        [(data, host, port)] = [s for s in self.udp.sent if s[0].startswith(b"BYE ")]
        self.assertEqual((host, port), (SRC_HOST, 5060))
        [bye] = self.udp.requests()
        self.assertEqual(bye.raw_uri, "sip:src@192.0.2.1:5060")
        self.assertEqual(bye.headers.get("From"), f"<sip:srs@example.com>;tag={dialog.local_tag}")
        self.assertEqual(bye.from_.tag, ok.to.tag)
        self.assertEqual(bye.headers.get("To"), "<sip:src@example.com>;tag=src-tag")
        self.assertEqual(bye.call_id, "call-1@192.0.2.1")
        self.assertEqual(bye.headers.get("CSeq"), "1 BYE")
        self.assertEqual(bye.headers.get("Max-Forwards"), "70")
        self.assertIsNone(bye.headers.get("Route"))
        via = bye.top_via
        self.assertEqual((via.transport, via.host, via.port), ("UDP", "192.0.2.10", 5060))
        self.assertTrue(via.branch and via.branch.startswith(MAGIC_COOKIE))
        self.assertNotEqual(via.branch, "z9hG4bK-1")
        self.assertEqual(via.rport, "")
        # The SRC answers; the result fires with its response.
        answer = make_response(bye, 200, "OK")
        self.stack.receive(answer.to_bytes(), UDP)
        self.assertEqual([r.status for r in results], [200])
        # A second hang-up uses the next CSeq and another branch.
        self.core.send_bye(dialog)
        second = self.udp.requests()[-1]
        self.assertEqual(second.headers.get("CSeq"), "2 BYE")
        self.assertNotEqual(second.top_via.branch, via.branch)

    def test_hang_up_over_connection(self) -> None:
        connection = FakeConnection()
        tcp = Source("TCP", SRC_HOST, 40000, connection)
        self.send("INVITE", tcp, transport="TCP")
        dialog = self.app.invites[0][1]
        self.send("ACK", tcp, transport="TCP", branch=new_branch(), to_tag=dialog.local_tag)
        self.core.hang_up(dialog, "orphan")
        bye = connection.written[-1]
        self.assertTrue(bye.startswith(b"BYE sip:src@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK"))
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(self.app.ended, [(dialog, "orphan")])
        # The connection answers.
        self.stack.receive(make_response(parse_request(bye), 200, "OK").to_bytes(), tcp)

    def test_hang_up_with_route_set(self) -> None:
        dialog, _ = self.establish(extra=[("Record-Route", "<sip:198.51.100.5:5070;lr>, <sip:p2.example.com;lr>")])
        self.core.hang_up(dialog, "drain")
        [bye] = self.udp.requests()
        self.assertEqual(bye.headers.get_raw("Route"), ["<sip:198.51.100.5:5070;lr>", "<sip:p2.example.com;lr>"])
        self.assertEqual(bye.raw_uri, "sip:src@192.0.2.1:5060")
        # Loose routing: the BYE goes to the first route, not straight to the remote target.
        sent = [(host, port) for data, host, port in self.udp.sent if data.startswith(b"BYE ")]
        self.assertEqual(sent, [("198.51.100.5", 5070)])

    def test_hang_up_with_hostname_route_goes_to_previous_hop(self) -> None:
        proxy = Source("UDP", "198.51.100.9", 5062)
        self.send("INVITE", proxy, extra=[("Record-Route", "<sip:proxy.example.com;lr>")])
        dialog = self.app.invites[0][1]
        self.send("ACK", proxy, branch=new_branch(), to_tag=dialog.local_tag)
        self.core.hang_up(dialog, "drain")
        sent = [(host, port) for data, host, port in self.udp.sent if data.startswith(b"BYE ")]
        self.assertEqual(sent, [("198.51.100.9", 5062)])

    def test_hang_up_without_route_set_uses_contact(self) -> None:
        proxy = Source("UDP", "198.51.100.9", 5062)
        self.send("INVITE", proxy, contact="<sip:src@203.0.113.4:5080;transport=udp>")
        dialog = self.app.invites[0][1]
        self.send("ACK", proxy, branch=new_branch(), to_tag=dialog.local_tag)
        self.core.hang_up(dialog, "drain")
        sent = [(host, port) for data, host, port in self.udp.sent if data.startswith(b"BYE ")]
        self.assertEqual(sent, [("203.0.113.4", 5080)])


def parse_request(data: bytes) -> Request:
    from siprecd.sip.message import parse_message

    message = parse_message(data)
    assert isinstance(message, Request)
    return message
