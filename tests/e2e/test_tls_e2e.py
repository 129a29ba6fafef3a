"""SIP over TLS end to end: OpenSSL's s_client against ``twistd -n siprec``, with and without mTLS."""

from __future__ import annotations

import os
import shutil
import uuid

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.certs import make_test_pki
from tests.e2e.server import Server
from tests.e2e.tlsclient import OpenSSLClient

OFFER = (
    b"v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\na=label:1\r\n"
)


def request(method: str, port: int, call_id: str, cseq: int, *, to_tag: str = "", body: bytes = b"") -> bytes:
    to = f"<sip:srs@127.0.0.1:{port}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:srs@127.0.0.1:{port};transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        "From: <sip:src@127.0.0.1>;tag=src1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:src@127.0.0.1:5999;transport=tls>",
        "Max-Forwards: 70",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class TLSTestsBase(SynchronousTestCase):
    mutual = False
    server_class: type[Server] = Server  # test_workers_e2e runs these through [service] workers

    def setUp(self) -> None:
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed: run scripts/setup")
        self.pki = make_test_pki(os.path.abspath(self.mktemp()))
        sip = {
            "tls_port": "auto",
            "tls_certificate": self.pki.server_cert,
            "tls_private_key": self.pki.server_key,
        }
        if self.mutual:
            sip["tls_ca_certificates"] = self.pki.ca_cert
        self.server = self.server_class(self.mktemp(), sections={"sip": sip, "siprec": {"accept_plain_calls": "true"}})
        self.server.start()
        self.addCleanup(self._stop)

    def _stop(self) -> None:
        self.server.stop()
        self.assertNotIn("Traceback", self.server.log())

    def client(self, certificate: str | None = None, key: str | None = None) -> OpenSSLClient:
        client = OpenSSLClient(self.server.tls_port, self.pki.ca_cert, certificate, key)
        self.addCleanup(client.close)
        return client

    def call(self, client: OpenSSLClient) -> None:
        """OPTIONS, then INVITE / ACK / BYE over one TLS connection."""
        port = self.server.tls_port
        client.send(request("OPTIONS", port, "tls-options", 1))
        options = client.final_response()
        self.assertIsNotNone(options, "no answer to OPTIONS over TLS")
        assert options is not None
        self.assertEqual(options.status, 200)
        self.assertIn("siprec", options.headers.tokens("Supported"))
        # RFC 3261 §18.2.2: over the connection, Via stamped with what the server saw.
        self.assertEqual(options.top_via.received, "127.0.0.1")
        client.send(request("INVITE", port, "tls-call", 1, body=OFFER))
        answer = client.final_response()
        assert answer is not None
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.content_type, "application/sdp")
        self.assertIn(b"a=recvonly", answer.body)
        contact = answer.headers.get("Contact") or ""
        self.assertTrue(contact.startswith("<sips:srs@127.0.0.1:"), contact)
        self.assertIn(";transport=tls>", contact)
        tag = answer.to.tag
        assert tag is not None
        client.send(request("ACK", port, "tls-call", 1, to_tag=tag))
        client.send(request("BYE", port, "tls-call", 2, to_tag=tag))
        bye = client.final_response()
        assert bye is not None
        self.assertEqual(bye.status, 200)


class TLSTests(TLSTestsBase):
    def test_options_invite_bye(self) -> None:
        self.call(self.client())


class MutualTLSTests(TLSTestsBase):
    mutual = True

    def test_trusted_client_certificate_accepted(self) -> None:
        self.call(self.client(self.pki.client_cert, self.pki.client_key))

    def test_missing_client_certificate_refused(self) -> None:
        client = self.client()
        client.send(request("OPTIONS", self.server.tls_port, "no-cert", 1))
        self.assertIsNone(client.final_response(timeout=3))
        self.assertIn("alert", client.close().lower())
        self.assertIn("peer did not return a certificate", self.server.wait_for_log("peer did not return a certificate"))

    def test_untrusted_client_certificate_refused(self) -> None:
        client = self.client(self.pki.rogue_client_cert, self.pki.rogue_client_key)
        client.send(request("OPTIONS", self.server.tls_port, "rogue-cert", 1))
        self.assertIsNone(client.final_response(timeout=3))
        self.assertIn("alert", client.close().lower())
        self.assertIn("certificate verify failed", self.server.wait_for_log("certificate verify failed"))
