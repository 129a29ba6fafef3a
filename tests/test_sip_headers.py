"""Header names, the Headers container and typed header values."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.errors import BadRequest
from siprecd.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    contact_has_feature,
    format_params,
    get_param,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_via,
    sip_uri_of,
    split_list,
)
from siprecd.sip.uri import AbsoluteURI, SipURI, TelURI


class NameTests(SynchronousTestCase):
    def test_compact_forms(self) -> None:
        expected = {
            "v": "Via",
            "f": "From",
            "t": "To",
            "i": "Call-ID",
            "m": "Contact",
            "l": "Content-Length",
            "c": "Content-Type",
            "k": "Supported",
            "s": "Subject",
            "e": "Content-Encoding",
            "o": "Event",
            "r": "Refer-To",
            "u": "Allow-Events",
        }
        for compact, full in expected.items():
            self.assertEqual(canonical_name(compact), full)
            self.assertEqual(canonical_name(compact.upper()), full)

    def test_canonical_names(self) -> None:
        for raw, name in (
            ("call-id", "Call-ID"),
            ("CALL-ID", "Call-ID"),
            ("cseq", "CSeq"),
            ("VIA", "Via"),
            ("content-length", "Content-Length"),
            ("record-route", "Record-Route"),
            ("www-authenticate", "WWW-Authenticate"),
            ("mime-version", "MIME-Version"),
            ("rseq", "RSeq"),
            ("x-vendor-thing", "X-Vendor-Thing"),
            ("q", "Q"),  # one letter but not a compact form
        ):
            self.assertEqual(canonical_name(raw), name)


class SplitListTests(SynchronousTestCase):
    def test_plain(self) -> None:
        self.assertEqual(split_list("INVITE, ACK ,BYE"), ["INVITE", "ACK", "BYE"])

    def test_quotes_and_brackets(self) -> None:
        value = '"Doe, John" <sip:a@b;x=1,2>;tag=1, <sip:c@d?h=a,b>, "q\\",x" <sip:e@f>'
        self.assertEqual(
            split_list(value),
            ['"Doe, John" <sip:a@b;x=1,2>;tag=1', "<sip:c@d?h=a,b>", '"q\\",x" <sip:e@f>'],
        )

    def test_empty_items_dropped(self) -> None:
        self.assertEqual(split_list(" a,, ,b, "), ["a", "b"])
        self.assertEqual(split_list(""), [])


class HeadersTests(SynchronousTestCase):
    def test_lookup_by_any_form(self) -> None:
        headers = Headers([("v", "SIP/2.0/UDP a"), ("call-id", "x"), ("l", "0")])
        self.assertEqual(list(headers), [("Via", "SIP/2.0/UDP a"), ("Call-ID", "x"), ("Content-Length", "0")])
        self.assertEqual(headers.get("VIA"), "SIP/2.0/UDP a")
        self.assertEqual(headers.get("v"), "SIP/2.0/UDP a")
        self.assertEqual(headers.get("i"), "x")
        self.assertEqual(headers.get("Content-Length"), "0")
        self.assertIn("call-ID", headers)
        self.assertIn("l", headers)
        self.assertNotIn("Contact", headers)
        self.assertNotIn(3, headers)
        self.assertIsNone(headers.get("To"))
        self.assertEqual(headers.get("To", "d"), "d")
        self.assertEqual(len(headers), 3)

    def test_repeated_headers_and_get_list(self) -> None:
        headers = Headers(
            [
                ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
                ("Supported", "timer"),
                ("v", "SIP/2.0/TCP c;branch=z9hG4bK3"),
                ("k", "siprec, 100rel"),
            ]
        )
        self.assertEqual(headers.get("Via"), "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")
        self.assertEqual(len(headers.get_raw("Via")), 2)
        self.assertEqual(
            headers.get_list("Via"),
            ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/TCP c;branch=z9hG4bK3"],
        )
        self.assertEqual(headers.tokens("Supported"), ["timer", "siprec", "100rel"])
        self.assertEqual(headers.get_list("Require"), [])

    def test_tokens_lower_case(self) -> None:
        headers = Headers([("Require", "SIPREC, Timer")])
        self.assertEqual(headers.tokens("require"), ["siprec", "timer"])

    def test_add_set_replace_remove(self) -> None:
        fields = [("X-A", "1"), ("X-B", "2"), ("X-A", "3"), ("X-C", "4"), ("X-A", "5")]
        headers = Headers(fields)
        copy = headers.copy()
        headers.set("x-a", "x")
        self.assertEqual(list(headers), [("X-A", "x"), ("X-B", "2"), ("X-C", "4")])
        headers.set("X-D", "y")
        self.assertEqual(list(headers)[-1], ("X-D", "y"))
        headers.add("x-b", "z")
        self.assertEqual(headers.get_raw("X-B"), ["2", "z"])
        headers.replace_first("X-B", "w")
        self.assertEqual(headers.get_raw("X-B"), ["w", "z"])
        headers.replace_first("X-E", "new")
        self.assertEqual(list(headers)[-1], ("X-E", "new"))
        headers.remove("X-B")
        self.assertEqual(headers.get_raw("X-B"), [])
        self.assertEqual(list(headers), [("X-A", "x"), ("X-C", "4"), ("X-D", "y"), ("X-E", "new")])
        # The copy is independent.
        self.assertEqual(copy.get_raw("X-A"), ["1", "3", "5"])
        self.assertEqual(copy, Headers(fields))
        self.assertNotEqual(copy, headers)

    def test_single_letters_are_compact_forms(self) -> None:
        headers = Headers([("c", "application/sdp")])
        self.assertEqual(list(headers), [("Content-Type", "application/sdp")])


class ParamsTests(SynchronousTestCase):
    def test_parse(self) -> None:
        params = parse_params('a=b; c ;d="x;y"; E = f', "here")
        self.assertEqual(params, (("a", "b"), ("c", None), ("d", '"x;y"'), ("E", "f")))
        self.assertEqual(get_param(params, "e"), "f")
        self.assertEqual(get_param(params, "c"), "")
        self.assertIsNone(get_param(params, "z"))
        self.assertEqual(format_params(params), ';a=b;c;d="x;y";E=f')

    def test_errors_name_where(self) -> None:
        for text, fragment in (
            ("a=b;;c", "empty parameter in here"),
            ("a b=c", "bad parameter name 'a b' in here"),
            ("a=", "parameter 'a' without value in here"),
        ):
            with self.assertRaises(BadRequest) as caught:
                parse_params(text, "here")
            self.assertEqual(caught.exception.reason, fragment)


class ViaTests(SynchronousTestCase):
    def test_basic(self) -> None:
        via = parse_via("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds")
        self.assertEqual(
            via, Via("SIP/2.0", "UDP", "pc33.example.com", 5066, (("branch", "z9hG4bK776asdhds"),))
        )
        self.assertEqual(via.branch, "z9hG4bK776asdhds")
        self.assertEqual(via.sent_by, ("pc33.example.com", 5066))
        self.assertIsNone(via.received)
        self.assertIsNone(via.rport)
        self.assertIsNone(via.maddr)
        self.assertEqual(str(via), "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds")

    def test_case_and_whitespace(self) -> None:
        via = parse_via("sip / 2.0 / tcp  host.example.com : 5060 ; branch = z9hG4bKx ;rport")
        self.assertEqual(via.protocol, "SIP/2.0")
        self.assertEqual(via.transport, "TCP")
        self.assertEqual(via.host, "host.example.com")
        self.assertEqual(via.port, 5060)
        self.assertEqual(via.branch, "z9hG4bKx")
        self.assertEqual(via.rport, "")

    def test_received_rport(self) -> None:
        via = parse_via("SIP/2.0/UDP 10.0.0.1;rport=5070;received=192.0.2.7;branch=z9hG4bK1")
        self.assertIsNone(via.port)
        self.assertEqual(via.rport, "5070")
        self.assertEqual(via.received, "192.0.2.7")
        self.assertEqual(via.branch, "z9hG4bK1")

    def test_ipv6(self) -> None:
        via = parse_via("SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKa;received=2001:db8::7;maddr=[2001:db8::8]")
        self.assertEqual(via.host, "[2001:db8::9]")
        self.assertEqual(via.port, 5061)
        self.assertEqual(via.received, "2001:db8::7")
        self.assertEqual(via.maddr, "[2001:db8::8]")
        self.assertEqual(
            str(via), "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKa;received=2001:db8::7;maddr=[2001:db8::8]"
        )

    def test_with_params(self) -> None:
        via = parse_via("SIP/2.0/UDP h;branch=z9hG4bK1")
        changed = via.with_params((("branch", "z9hG4bK1"), ("received", "1.2.3.4")))
        self.assertEqual(str(changed), "SIP/2.0/UDP h;branch=z9hG4bK1;received=1.2.3.4")
        self.assertEqual(str(via), "SIP/2.0/UDP h;branch=z9hG4bK1")

    def test_malformed(self) -> None:
        for value, fragment in (
            ("SIP/2.0 host", "malformed Via"),
            ("SIP/2.0/UDP", "malformed Via"),
            ("", "malformed Via"),
            ("SIP/2.0/UDP host:99999", "port out of range"),
            ("SIP/2.0/UDP host:0", "port out of range"),
            ("SIP/2.0/UDP host;branch=", "without value"),
            ("SIP/2.0/UDP [::1;branch=z9hG4bK", "Via"),
            ("SIP/2.0/UDP ho_st;branch=z9hG4bK", "bad host"),
        ):
            with self.assertRaises(BadRequest) as caught:
                parse_via(value)
            self.assertIn(fragment, caught.exception.reason)
            self.assertIn("Via", caught.exception.reason)


class NameAddrTests(SynchronousTestCase):
    def test_quoted_display_with_escapes(self) -> None:
        addr = parse_name_addr(r'"Bob \"the\" Builder \\ x" <sip:bob@example.com>;tag=abc', "From")
        self.assertEqual(addr.display_name, 'Bob "the" Builder \\ x')
        self.assertEqual(addr.uri, SipURI("sip", "example.com", user="bob"))
        self.assertEqual(addr.tag, "abc")
        self.assertTrue(addr.bracketed)
        self.assertEqual(str(addr), r'"Bob \"the\" Builder \\ x" <sip:bob@example.com>;tag=abc')
        self.assertEqual(parse_name_addr(str(addr), "From"), addr)

    def test_quoted_display_utf8_and_specials(self) -> None:
        addr = parse_name_addr('"Jürgen <Müller>, Ltd" <sip:j@example.com>', "To")
        self.assertEqual(addr.display_name, "Jürgen <Müller>, Ltd")
        self.assertEqual(addr.params, ())
        self.assertIsNone(addr.tag)

    def test_empty_quoted_display(self) -> None:
        addr = parse_name_addr('""<sip:a@b>', "To")
        self.assertEqual(addr.display_name, "")

    def test_unquoted_display(self) -> None:
        addr = parse_name_addr("  Alice   Smith <sip:alice@example.com;transport=tcp> ; tag = 9 ", "From")
        self.assertEqual(addr.display_name, "Alice Smith")
        self.assertEqual(addr.uri, SipURI("sip", "example.com", user="alice", params=(("transport", "tcp"),)))
        self.assertEqual(addr.params, (("tag", "9"),))
        self.assertEqual(str(addr), '"Alice Smith" <sip:alice@example.com;transport=tcp>;tag=9')

    def test_bracketed_without_display(self) -> None:
        addr = parse_name_addr("<sip:srs@10.0.0.1:5060>;+sip.srs;expires=60", "Contact")
        self.assertIsNone(addr.display_name)
        self.assertTrue(contact_has_feature(addr, "+sip.srs"))
        self.assertFalse(contact_has_feature(addr, "+sip.src"))
        self.assertEqual(get_param(addr.params, "expires"), "60")

    def test_addr_spec_params_belong_to_header(self) -> None:
        # Without <>, ";tag=" is a header parameter, not a URI parameter (RFC 3261 §20).
        addr = parse_name_addr("sip:alice@example.com;tag=1928301774;transport=tcp", "From")
        self.assertFalse(addr.bracketed)
        self.assertEqual(addr.uri, SipURI("sip", "example.com", user="alice"))
        self.assertEqual(addr.params, (("tag", "1928301774"), ("transport", "tcp")))
        self.assertEqual(addr.tag, "1928301774")
        self.assertEqual(str(addr), "<sip:alice@example.com>;tag=1928301774;transport=tcp")

    def test_uri_params_inside_brackets_stay_in_uri(self) -> None:
        addr = parse_name_addr("<sip:alice@example.com;tag=uri-param>;tag=header", "From")
        self.assertEqual(addr.tag, "header")
        assert isinstance(addr.uri, SipURI)
        self.assertEqual(addr.uri.param("tag"), "uri-param")

    def test_addr_spec_lws_before_param(self) -> None:
        addr = parse_name_addr("sip:a@b ;tag=x", "To")
        self.assertEqual(addr.tag, "x")

    def test_tel_and_absolute(self) -> None:
        self.assertEqual(parse_name_addr("<tel:+15550100>;tag=1", "From").uri, TelURI("+15550100"))
        addr = parse_name_addr("<urn:service:sos>", "To")
        self.assertEqual(addr.uri, AbsoluteURI("urn", "urn:service:sos"))
        self.assertIsNone(sip_uri_of(addr))
        self.assertEqual(sip_uri_of(parse_name_addr("<sip:x@y>", "To")), SipURI("sip", "y", user="x"))

    def test_with_tag(self) -> None:
        addr = parse_name_addr('"A" <sip:a@b>;tag=old;x=1', "To")
        tagged = addr.with_tag("new")
        self.assertEqual(tagged.tag, "new")
        self.assertEqual(tagged.params, (("x", "1"), ("tag", "new")))
        self.assertEqual(addr.tag, "old")

    def test_malformed(self) -> None:
        for value, fragment in (
            ('"unterminated <sip:a@b>', "unterminated quoted display name"),
            ('"Name" sip:a@b', "display name not followed by <URI>"),
            ("<sip:a@b", "unterminated <URI>"),
            ("< sip:a@b>", "whitespace inside <URI>"),
            ("<sip:a@b> junk", "unexpected text 'junk' after URI"),
            ("<sip:a@b>;tag", ""),  # flag tag is legal syntax; checked below
            ("sip:a @b", "malformed address"),
            ("", "malformed address"),
            ("<sip:>", "no host"),
            ("<nonsense>", "no scheme"),
        ):
            if value == "<sip:a@b>;tag":
                self.assertEqual(parse_name_addr(value, "To").tag, "")
                continue
            with self.assertRaises(BadRequest) as caught:
                parse_name_addr(value, "To")
            reason = caught.exception.reason
            self.assertIn(fragment, reason)
            self.assertIn(f"To {value!r}", reason)

    def test_str_of_plain(self) -> None:
        self.assertEqual(str(NameAddr(SipURI("sip", "h"))), "<sip:h>")


class CSeqTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_cseq("4711 INVITE"), CSeq(4711, "INVITE"))
        self.assertEqual(parse_cseq("  0   BYE "), CSeq(0, "BYE"))
        self.assertEqual(parse_cseq("2147483647 ACK"), CSeq(2**31 - 1, "ACK"))
        self.assertEqual(str(CSeq(3, "BYE")), "3 BYE")

    def test_errors(self) -> None:
        for value, fragment in (
            ("INVITE", "malformed CSeq 'INVITE'"),
            ("1", "malformed CSeq '1'"),
            ("1 INVITE extra", "malformed CSeq"),
            ("-1 INVITE", "malformed CSeq"),
            ("1.5 INVITE", "malformed CSeq"),
            ("1 IN<VITE", "malformed CSeq"),
            ("", "malformed CSeq"),
            ("2147483648 INVITE", "CSeq number 2147483648 exceeds 2**31 - 1"),
            ("\u00b2 INVITE", "malformed CSeq"),  # superscript two: isdigit() but not a number
            ("\u0661 INVITE", "malformed CSeq"),  # Arabic-Indic one
        ):
            with self.assertRaises(BadRequest) as caught:
                parse_cseq(value)
            self.assertIn(fragment, caught.exception.reason)
