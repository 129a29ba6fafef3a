"""Checks of the environment that must pass before the reactor runs: files, ports, directories.

Every problem is collected so that the operator sees them all at once.
"""

from __future__ import annotations

import os
import socket
import tempfile

from siprecd.config import Config
from siprecd.sip.tls import TLSConfigError, server_options


def preflight(config: Config) -> list[str]:
    errors: list[str] = []
    sip = config.sip
    if sip.tls_port:
        assert sip.tls_certificate and sip.tls_private_key
        try:
            server_options(sip.tls_certificate, sip.tls_private_key, sip.tls_ca_certificates)
        except TLSConfigError as error:
            errors.append(str(error))
    security = config.security
    if security.dtls_certificate:
        from siprecd.security.certificate import CertificateError
        from siprecd.security.dtls_method import dtls_certificate

        try:
            dtls_certificate(security)
        except CertificateError as error:
            errors.append(str(error))
    if "dtls-srtp" in security.key_exchange:
        from siprecd.security.dtls_method import dtls_profiles

        if not dtls_profiles(security.suites):
            errors.append(
                "[security] key_exchange has dtls-srtp but suites allows none of its profiles "
                "(AES_CM_128_HMAC_SHA1_80/_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM)"
            )
    ports = [
        ("[sip] udp_port", socket.SOCK_DGRAM, sip.bind_address, sip.udp_port),
        ("[sip] tcp_port", socket.SOCK_STREAM, sip.bind_address, sip.tcp_port),
        ("[sip] tls_port", socket.SOCK_STREAM, sip.bind_address, sip.tls_port),
        ("[web] port", socket.SOCK_STREAM, config.web.bind_address, config.web.port),
    ]
    for name, kind, address, port in ports:
        if port:
            problem = port_problem(kind, address, port)
            if problem:
                errors.append(f"{name} = {port} on {address}: {problem}")
    if config.encryption.enabled:
        from siprecd.crypto.keystore import KeyStoreError
        from siprecd.crypto.stores import key_store_from_config

        try:
            key_store_from_config(config.encryption, os.environ)
        except KeyStoreError as error:
            errors.append(f"[encryption] {error}")
    if config.web.port:
        from siprecd.web.auth import check_exposure

        exposure = check_exposure(config.web.bind_address, bool(config.web.api_token or config.web.users))
        if exposure:
            errors.append(exposure)
    problem = directory_problem(config.recording.directory)
    if problem:
        errors.append(f"[recording] directory = {config.recording.directory}: {problem}")
    return errors


def port_problem(kind: int, address: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            # Twisted listens with SO_REUSEADDR, so TIME_WAIT leftovers are not a conflict.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as error:
            return f"cannot bind: {error.strerror}"
    return None


def directory_problem(directory: str) -> str | None:
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".preflight-"):
            pass
    except OSError as error:
        return f"not writable: {error.strerror}"
    return None
