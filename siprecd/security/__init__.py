"""Secured media: SRTP contexts, SDES (RFC 4568), the [security] policy; DTLS-SRTP plugs in here."""

from siprecd.security.srtp import InboundSRTP, OutboundSRTCP, SRTPError
from siprecd.security.suites import DTLS_PROFILES, SUITES, Suite

__all__ = ["DTLS_PROFILES", "SUITES", "InboundSRTP", "OutboundSRTCP", "SRTPError", "Suite"]
