"""siprecd: a SIPREC Session Recording Server (RFC 7866) on Twisted."""

__version__ = "0.1.0"
