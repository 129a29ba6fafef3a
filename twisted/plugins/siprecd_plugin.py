"""Registers ``twistd siprec``.  No __init__.py in twisted/ or twisted/plugins/ (by design)."""

from twisted.application.service import ServiceMaker

siprec = ServiceMaker(
    "siprecd",
    "siprecd.tap",
    "SIPREC Session Recording Server (RFC 7866)",
    "siprec",
)
