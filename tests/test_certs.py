"""The test PKI helper (tests/certs.py) makes what the TLS tests rely on."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import TestPKI, make_test_pki


def _cert(path: str) -> x509.Certificate:
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def _key(path: str) -> ec.EllipticCurvePrivateKey:
    with open(path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class MakeTestPKITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = make_test_pki(self.mktemp())

    def test_paths(self) -> None:
        self.assertIsInstance(self.pki, TestPKI)
        names = {
            "ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key",
            "rogue-client.pem", "rogue-client.key", "rogue-ca.pem", "rogue-ca.key",
        }
        self.assertEqual(set(os.listdir(self.pki.directory)), names)
        self.assertEqual(os.path.basename(self.pki.rogue_client_cert), "rogue-client.pem")
        with self.assertRaises(Exception):
            self.pki.ca_cert = "elsewhere"  # type: ignore[misc]

    def test_key_file_modes(self) -> None:
        for path in (self.pki.ca_key, self.pki.server_key, self.pki.client_key,
                     self.pki.rogue_ca_key, self.pki.rogue_client_key):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, path)
        self.assertEqual(stat.S_IMODE(os.stat(self.pki.server_cert).st_mode), 0o644)

    def test_keys_are_p256_and_match_their_certificates(self) -> None:
        pairs = [
            (self.pki.ca_cert, self.pki.ca_key),
            (self.pki.server_cert, self.pki.server_key),
            (self.pki.client_cert, self.pki.client_key),
            (self.pki.rogue_client_cert, self.pki.rogue_client_key),
        ]
        for cert_path, key_path in pairs:
            key = _key(key_path)
            self.assertIsInstance(key.curve, ec.SECP256R1)
            self.assertEqual(
                _cert(cert_path).public_key().public_numbers(),
                key.public_key().public_numbers(),
                cert_path,
            )

    def test_validity_window(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        for path in (self.pki.ca_cert, self.pki.server_cert, self.pki.client_cert,
                     self.pki.rogue_client_cert):
            cert = _cert(path)
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            self.assertLess(start, now - datetime.timedelta(hours=23), path)
            self.assertGreater(end, now + datetime.timedelta(days=29), path)
            self.assertLess(end, now + datetime.timedelta(days=31), path)

    def test_ca(self) -> None:
        ca = _cert(self.pki.ca_cert)
        self.assertTrue(_signed_by(ca, ca))
        self.assertTrue(ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

    def test_server_signed_by_ca_with_sans(self) -> None:
        server = _cert(self.pki.server_cert)
        self.assertTrue(_signed_by(server, _cert(self.pki.ca_cert)))
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("localhost", san.get_values_for_type(x509.DNSName))
        self.assertIn(ipaddress.ip_address("127.0.0.1"), san.get_values_for_type(x509.IPAddress))
        eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertIn(ExtendedKeyUsageOID.SERVER_AUTH, eku)
        self.assertFalse(server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

    def test_client_signed_by_ca(self) -> None:
        client = _cert(self.pki.client_cert)
        self.assertTrue(_signed_by(client, _cert(self.pki.ca_cert)))
        eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertIn(ExtendedKeyUsageOID.CLIENT_AUTH, eku)

    def test_rogue_client_not_signed_by_ca(self) -> None:
        rogue = _cert(self.pki.rogue_client_cert)
        ca = _cert(self.pki.ca_cert)
        # Same issuer name as the real CA, so only the signature check can tell.
        self.assertEqual(rogue.issuer, ca.subject)
        self.assertFalse(_signed_by(rogue, ca))
        self.assertTrue(_signed_by(rogue, _cert(self.pki.rogue_ca_cert)))

    def test_fresh_keys_each_time(self) -> None:
        other = make_test_pki(self.mktemp())
        self.assertNotEqual(
            _cert(self.pki.ca_cert).fingerprint(_cert(self.pki.ca_cert).signature_hash_algorithm),
            _cert(other.ca_cert).fingerprint(_cert(other.ca_cert).signature_hash_algorithm),
        )
