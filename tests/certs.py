"""A throwaway PKI for TLS tests, made with ``cryptography`` alone (no openssl CLI).

``make_test_pki(directory)`` writes, all keys EC P-256, certificates valid from one day ago
to 30 days ahead:

- ``ca.pem`` / ``ca.key``: the trusted test CA (self-signed, CA:TRUE, pathlen 0);
- ``server.pem`` / ``server.key``: server certificate signed by the CA, with SANs
  DNS:localhost and IP:127.0.0.1 (and IP:::1), serverAuth;
- ``client.pem`` / ``client.key``: client certificate signed by the CA, clientAuth;
- ``rogue-ca.pem`` / ``rogue-ca.key``: a second, untrusted CA with the same subject name as
  the real one, so only the signature tells them apart;
- ``rogue-client.pem`` / ``rogue-client.key``: client certificate signed by the rogue CA.

Private keys are PKCS#8 PEM, unencrypted, mode 0600. Certificates are PEM, mode 0644.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestPKI", "make_test_pki"]


@dataclass(frozen=True)
class TestPKI:
    """Paths of the files written by :func:`make_test_pki`."""

    __test__ = False  # not a test case, whatever its name says

    directory: str
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_ca_cert: str
    rogue_ca_key: str
    rogue_client_cert: str
    rogue_client_key: str


_CA_NAME = "siprecd test CA"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "siprecd tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, *, ca: bool
) -> x509.CertificateBuilder:
    """The fields a CA and a leaf share; a CA signs certificates, a leaf agrees keys."""
    not_before, not_after = _validity()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = _name(common_name)
    public = key.public_key()
    cert = (
        _builder(name, name, public, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    public = key.public_key()
    builder = (
        _builder(_name(common_name), ca_cert.subject, public, ca=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(path: str, data: bytes, mode: int) -> None:
    # Create with the final mode so a key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask; set it exactly
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
    finally:
        if fd != -1:
            os.close(fd)


def _write_key(path: str, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def _write_cert(path: str, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def make_test_pki(directory: str) -> TestPKI:
    """Create the test PKI in ``directory`` (made if missing) and return its paths."""
    os.makedirs(directory, exist_ok=True)
    pki = TestPKI(
        directory=directory,
        ca_cert=os.path.join(directory, "ca.pem"),
        ca_key=os.path.join(directory, "ca.key"),
        server_cert=os.path.join(directory, "server.pem"),
        server_key=os.path.join(directory, "server.key"),
        client_cert=os.path.join(directory, "client.pem"),
        client_key=os.path.join(directory, "client.key"),
        rogue_ca_cert=os.path.join(directory, "rogue-ca.pem"),
        rogue_ca_key=os.path.join(directory, "rogue-ca.key"),
        rogue_client_cert=os.path.join(directory, "rogue-client.pem"),
        rogue_client_key=os.path.join(directory, "rogue-client.key"),
    )

    ca_key, ca_cert = _make_ca(_CA_NAME)
    server_key, server_cert = _make_leaf(
        "localhost",
        ca_key,
        ca_cert,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
    )
    client_key, client_cert = _make_leaf(
        "siprecd test client", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    # Same subject as the real CA on purpose: a verifier must check signatures, not names.
    rogue_ca_key, rogue_ca_cert = _make_ca(_CA_NAME)
    rogue_key, rogue_cert = _make_leaf(
        "siprecd rogue client", rogue_ca_key, rogue_ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH, []
    )

    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.server_cert, server_cert)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.client_cert, client_cert)
    _write_key(pki.client_key, client_key)
    _write_cert(pki.rogue_ca_cert, rogue_ca_cert)
    _write_key(pki.rogue_ca_key, rogue_ca_key)
    _write_cert(pki.rogue_client_cert, rogue_cert)
    _write_key(pki.rogue_client_key, rogue_key)
    return pki
