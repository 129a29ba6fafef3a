"""The SRS's DTLS certificate and RFC 8122 certificate fingerprints.

DTLS-SRTP (RFC 5763) authenticates the media channel by the fingerprint the signalling
carried, not by a CA: the certificate is self-signed and may be generated at start-up.
Pure code: no I/O except the explicit :func:`load_certificate` of configured PEM files.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "FINGERPRINT_HASHES",
    "DTLSCertificate",
    "Fingerprint",
    "FingerprintMismatch",
    "CertificateError",
    "certificate_fingerprint",
    "check_fingerprints",
    "fingerprints_of",
    "format_fingerprint",
    "generate_certificate",
    "load_certificate",
    "parse_fingerprint",
]

# RFC 8122 §5 hash function textual names we accept from a peer; md5/md2 are not accepted
# (RFC 8122 §5 says they must not be used) and sha-224 is never seen in the field.
FINGERPRINT_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}

# Long enough for any call; peers do not check it (RFC 5763 §5 relies on the fingerprint).
_VALIDITY = datetime.timedelta(days=365)


class CertificateError(ValueError):
    """A configured certificate or key cannot be used; the message names the file."""


class FingerprintMismatch(Exception):
    """The peer's DTLS certificate is not the one its SDP announced."""


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One a=fingerprint value: the hash name (lower case) and the digest bytes."""

    hash_name: str
    digest: bytes

    def __str__(self) -> str:
        return format_fingerprint(self.hash_name, self.digest)


def format_fingerprint(hash_name: str, digest: bytes) -> str:
    """``sha-256`` + digest -> ``"sha-256 AB:CD:..."`` (RFC 8122: upper-case hex pairs)."""
    return f"{hash_name} " + ":".join(f"{b:02X}" for b in digest)


def parse_fingerprint(value: str) -> Fingerprint:
    """Parse an a=fingerprint value; raise ValueError saying what is wrong.

    The hash name is case-insensitive (RFC 8122 §5 says lower case, but peers send
    ``SHA-256``) and hex digits may be either case.
    """
    hash_text, _, hex_text = value.strip().partition(" ")
    hash_name = hash_text.lower()
    algorithm = FINGERPRINT_HASHES.get(hash_name)
    if algorithm is None:
        supported = ", ".join(FINGERPRINT_HASHES)
        raise ValueError(f"fingerprint hash {hash_text!r} not supported (supported: {supported})")
    pairs = hex_text.strip().split(":")
    if not all(len(p) == 2 for p in pairs):
        raise ValueError(f"fingerprint {value.strip()!r} is not colon-separated hex pairs")
    try:
        digest = bytes.fromhex("".join(pairs))
    except ValueError:
        raise ValueError(f"fingerprint {value.strip()!r} is not colon-separated hex pairs") from None
    if len(digest) != algorithm.digest_size:
        raise ValueError(
            f"{hash_name} fingerprint has {len(digest)} bytes, expected {algorithm.digest_size}"
        )
    return Fingerprint(hash_name, digest)


def certificate_fingerprint(certificate: x509.Certificate, hash_name: str) -> Fingerprint:
    """The fingerprint of ``certificate`` (its DER form) under ``hash_name``."""
    return Fingerprint(hash_name, certificate.fingerprint(FINGERPRINT_HASHES[hash_name]()))


def check_fingerprints(certificate: x509.Certificate, expected: Sequence[Fingerprint]) -> None:
    """Raise FingerprintMismatch unless ``certificate`` matches one of ``expected``.

    RFC 8122 §5 allows several a=fingerprint lines (one per hash, or one per certificate the
    peer may present); any match is enough.
    """
    if not expected:
        raise FingerprintMismatch("the offer carries no a=fingerprint to check the certificate")
    for fingerprint in expected:
        actual = certificate_fingerprint(certificate, fingerprint.hash_name)
        if hmac.compare_digest(actual.digest, fingerprint.digest):
            return
    offered = ", ".join(sorted({f.hash_name for f in expected}))
    actual = certificate_fingerprint(certificate, expected[0].hash_name)
    raise FingerprintMismatch(
        f"peer certificate fingerprint {actual} matches none of the {len(expected)} "
        f"a=fingerprint value(s) in the SDP ({offered})"
    )


@dataclass(frozen=True)
class DTLSCertificate:
    """The SRS's certificate and private key, with the fingerprint the answers carry."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey | object

    def fingerprint(self, hash_name: str = "sha-256") -> Fingerprint:
        return certificate_fingerprint(self.certificate, hash_name)


def generate_certificate(*, now: datetime.datetime | None = None) -> DTLSCertificate:
    """A fresh self-signed ECDSA P-256 certificate (what browsers and linphone use too)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "siprecd")])
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALIDITY)
        .sign(key, hashes.SHA256())
    )
    return DTLSCertificate(certificate, key)


def load_certificate(certificate_pem: bytes, key_pem: bytes, *, where: str) -> DTLSCertificate:
    """Parse a configured PEM certificate and its key; CertificateError names ``where``."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError as exc:
        raise CertificateError(f"{where}: not a PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The key's own text never goes into the message: it is secret.
        raise CertificateError(f"{where}: private key unusable ({type(exc).__name__})") from None
    public = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != public:
        raise CertificateError(f"{where}: private key does not match the certificate")
    return DTLSCertificate(certificate, key)


def fingerprints_of(values: Iterable[str | None]) -> list[Fingerprint]:
    """Parse every usable a=fingerprint value, skipping ones with hashes we do not know.

    Raises ValueError only if values were given and none is usable, naming the first problem.
    """
    parsed: list[Fingerprint] = []
    problems: list[str] = []
    for value in values:
        try:
            parsed.append(parse_fingerprint(value or ""))
        except ValueError as exc:
            problems.append(str(exc))
    if problems and not parsed:
        raise ValueError(problems[0])
    return parsed
