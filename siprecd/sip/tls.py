"""TLS contexts for SIP over TLS: TLS 1.2+, optional mutual TLS against a configured CA."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import ssl


class TLSConfigError(Exception):
    """A TLS file is unreadable or unusable; the message names the file."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise TLSConfigError(f"{what} {path}: cannot read: {error.strerror}") from None


def load_certificates(path: str, what: str) -> list[crypto.X509]:
    try:
        certificates = x509.load_pem_x509_certificates(_read(path, what))
    except ValueError as error:
        raise TLSConfigError(f"{what} {path}: not a PEM certificate file ({error})") from None
    return [crypto.X509.from_cryptography(c) for c in certificates]


def server_options(
    certificate: str, private_key: str, ca_certificates: str | None
) -> ssl.CertificateOptions:
    """Server context; with ``ca_certificates`` clients must present a certificate it verifies."""
    chain = load_certificates(certificate, "[sip] tls_certificate")
    try:
        key = serialization.load_pem_private_key(_read(private_key, "[sip] tls_private_key"), None)
    except (ValueError, TypeError) as error:
        raise TLSConfigError(
            f"[sip] tls_private_key {private_key}: not an unencrypted PEM private key ({error})"
        ) from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != chain[0].to_cryptography().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise TLSConfigError(
            f"[sip] tls_private_key {private_key} does not match the certificate in {certificate}"
        )
    ca = load_certificates(ca_certificates, "[sip] tls_ca_certificates") if ca_certificates else []
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
        certificate=chain[0],
        extraCertChain=chain[1:],
        verify=bool(ca),
        caCerts=ca or None,
        requireCertificate=bool(ca),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    options.getContext()  # builds the context now so errors surface before the reactor runs
    return options
