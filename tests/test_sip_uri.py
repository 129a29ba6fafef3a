"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siprecd.errors import BadRequest
from siprecd.sip.uri import AbsoluteURI, SipURI, TelURI, URIError, parse_host, parse_uri


class SipURITests(SynchronousTestCase):
    def test_full_uri(self) -> None:
        uri = parse_uri("sip:alice:secret@example.com:5070;transport=tcp;lr?subject=hi&x=y")
        self.assertEqual(
            uri,
            SipURI(
                scheme="sip",
                host="example.com",
                user="alice",
                password="secret",
                port=5070,
                params=(("transport", "tcp"), ("lr", None)),
                headers="subject=hi&x=y",
            ),
        )
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.transport, "TCP")
        self.assertTrue(uri.has_param("LR"))
        self.assertEqual(uri.param("lr"), "")
        self.assertIsNone(uri.param("maddr"))
        self.assertEqual(str(uri), "sip:alice:secret@example.com:5070;transport=tcp;lr?subject=hi&x=y")

    def test_host_only(self) -> None:
        uri = parse_uri("sip:example.com")
        self.assertEqual(uri, SipURI("sip", "example.com"))
        assert isinstance(uri, SipURI)
        self.assertIsNone(uri.user)
        self.assertIsNone(uri.port)
        self.assertIsNone(uri.transport)
        self.assertEqual(str(uri), "sip:example.com")

    def test_sips_and_scheme_case(self) -> None:
        uri = parse_uri("SIPS:bob@Example.COM")
        self.assertEqual(uri, SipURI("sips", "Example.COM", user="bob"))
        self.assertEqual(str(uri), "sips:bob@Example.COM")

    def test_escaped_user(self) -> None:
        uri = parse_uri("sip:%61lice%20smith@example.com")
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.user, "%61lice%20smith")
        self.assertEqual(str(uri), "sip:%61lice%20smith@example.com")

    def test_user_with_semicolon_and_question_mark(self) -> None:
        # RFC 3261 user-unreserved includes ';' '?' '/': the first '@' ends the userinfo.
        uri = parse_uri("sip:+1555;phone-context=x?y@example.com;user=phone")
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.user, "+1555;phone-context=x?y")
        self.assertEqual(uri.host, "example.com")
        self.assertEqual(uri.params, (("user", "phone"),))
        self.assertIsNone(uri.headers)

    def test_empty_password(self) -> None:
        uri = parse_uri("sip:alice:@example.com")
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.password, "")
        self.assertEqual(str(uri), "sip:alice:@example.com")

    def test_ipv4(self) -> None:
        uri = parse_uri("sip:192.0.2.1:5060")
        self.assertEqual(uri, SipURI("sip", "192.0.2.1", port=5060))

    def test_ipv6_reference(self) -> None:
        uri = parse_uri("sip:alice@[2001:db8::1]:5061;transport=tls")
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.host, "[2001:db8::1]")
        self.assertEqual(uri.port, 5061)
        self.assertEqual(uri.transport, "TLS")
        self.assertEqual(str(uri), "sip:alice@[2001:db8::1]:5061;transport=tls")

    def test_ipv6_without_port(self) -> None:
        uri = parse_uri("sip:[::1]")
        self.assertEqual(uri, SipURI("sip", "[::1]"))

    def test_ipv4_mapped_ipv6(self) -> None:
        uri = parse_uri("sip:[::ffff:192.0.2.1]:5060")
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.host, "[::ffff:192.0.2.1]")

    def test_param_without_value_and_with_brackets(self) -> None:
        uri = parse_uri("sip:h.example.com;maddr=[2001:db8::2];ob")
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.params, (("maddr", "[2001:db8::2]"), ("ob", None)))
        self.assertEqual(uri.param("MADDR"), "[2001:db8::2]")

    def test_headers_only(self) -> None:
        uri = parse_uri("sip:example.com?Subject=x")
        assert isinstance(uri, SipURI)
        self.assertEqual(uri.headers, "Subject=x")
        self.assertEqual(uri.params, ())

    def test_round_trip(self) -> None:
        for text in (
            "sip:example.com",
            "sip:a@b.c:1",
            "sips:x:y@[::1]:65535;a;b=c?d=e",
            "sip:%41@host;user=phone",
        ):
            self.assertEqual(str(parse_uri(text)), text)
            self.assertEqual(parse_uri(str(parse_uri(text))), parse_uri(text))


class TelURITests(SynchronousTestCase):
    def test_global_number(self) -> None:
        uri = parse_uri("tel:+1-201-555-0123")
        self.assertEqual(uri, TelURI("+1-201-555-0123"))
        self.assertEqual(uri.scheme, "tel")
        self.assertEqual(str(uri), "tel:+1-201-555-0123")

    def test_local_number_with_params(self) -> None:
        uri = parse_uri("tel:7042;phone-context=example.com;ext=12")
        self.assertEqual(
            uri, TelURI("7042", (("phone-context", "example.com"), ("ext", "12")))
        )
        self.assertEqual(str(uri), "tel:7042;phone-context=example.com;ext=12")

    def test_bad_number(self) -> None:
        for text in ("tel:", "tel:abc!", "tel:;x=1"):
            with self.assertRaises(URIError) as caught:
                parse_uri(text)
            self.assertIn(repr(text), caught.exception.reason)


class AbsoluteURITests(SynchronousTestCase):
    def test_other_schemes_are_kept(self) -> None:
        for text, scheme in (
            ("http://example.com/x", "http"),
            ("mailto:a@example.com", "mailto"),
            ("urn:service:sos", "urn"),
            ("IM:alice@example.com", "im"),
        ):
            uri = parse_uri(text)
            self.assertEqual(uri, AbsoluteURI(scheme, text))
            self.assertEqual(str(uri), text)


class MalformedURITests(SynchronousTestCase):
    def assertBad(self, text: str, fragment: str) -> None:  # noqa: N802
        with self.assertRaises(URIError) as caught:
            parse_uri(text)
        error = caught.exception
        self.assertIsInstance(error, BadRequest)
        self.assertEqual(error.code, 400)
        self.assertIn(repr(text), error.reason)
        self.assertIn(fragment, error.reason)

    def test_no_scheme(self) -> None:
        self.assertBad("example.com", "no scheme")
        self.assertBad("", "no scheme")
        self.assertBad("1sip:x", "no scheme")

    def test_whitespace_or_delimiters(self) -> None:
        self.assertBad("sip:a b@example.com", "whitespace")
        self.assertBad("sip:example.com>", "delimiter")
        self.assertBad('sip:"x"@example.com', "delimiter")
        self.assertBad("http://a b", "whitespace")

    def test_no_host(self) -> None:
        self.assertBad("sip:", "no host")
        self.assertBad("sip:alice@", "no host")
        self.assertBad("sip:;transport=udp", "no host")

    def test_bad_user(self) -> None:
        self.assertBad("sip:@example.com", "user")
        self.assertBad("sip:al%zzice@example.com", "user")
        self.assertBad("sip:a[b@example.com", "user")

    def test_bad_password(self) -> None:
        self.assertBad("sip:alice:pa;ss@example.com", "password")

    def test_bad_host(self) -> None:
        self.assertBad("sip:exa_mple.com", "bad host")
        self.assertBad("sip:a..b", "bad host")
        self.assertBad("sip:.example.com", "bad host")
        self.assertBad("sip:[2001:db8::1", "bad host")
        self.assertBad("sip:host:", "bad host")
        self.assertBad("sip:host:abc", "bad host")
        self.assertBad("sip:host:123456", "bad host")

    def test_bad_ipv6(self) -> None:
        self.assertBad("sip:[2001:db8:::1]", "IPv6")
        self.assertBad("sip:[1.2.3.4]", "IPv6")

    def test_port_range(self) -> None:
        self.assertBad("sip:host:0", "port 0 out of range")
        self.assertBad("sip:host:65536", "port 65536 out of range")
        self.assertEqual(parse_uri("sip:host:65535"), SipURI("sip", "host", port=65535))

    def test_bad_params(self) -> None:
        self.assertBad("sip:host;", "empty parameter")
        self.assertBad("sip:host;a;;b", "empty parameter")
        self.assertBad("sip:host;=x", "bad parameter")
        self.assertBad("sip:host;a=b{c", "bad parameter")


class ParseHostTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_host("example.com", "x"), ("example.com", None))
        self.assertEqual(parse_host("example.com.", "x"), ("example.com.", None))
        self.assertEqual(parse_host("10.0.0.1:5060", "x"), ("10.0.0.1", 5060))
        self.assertEqual(parse_host("[::1]:5", "x"), ("[::1]", 5))

    def test_error_names_where(self) -> None:
        with self.assertRaises(URIError) as caught:
            parse_host("a b", "Via 'zzz'")
        self.assertEqual(caught.exception.reason, "bad host 'a b' in Via 'zzz'")
