"""SRTP contexts the receiver installs: inbound SRTP/SRTCP and the SRS's outbound SRTCP.

pylibsrtp (libsrtp with OpenSSL, ~0.5 us per packet) runs every suite it has;
:class:`~siprecd.security.transform.AESCMTransform` runs the AES-256-CM suites, the
UNENCRYPTED_* variants and SRTCP with 32-bit tags, which some peers send for the _32 suites
(RFC 4568 says 80).  An explicit ``initial_roc`` (a stream resumed past a rollover, which
pylibsrtp 1.0 cannot be told) puts every suite on the Python path: AES-CM there, or
:class:`~siprecd.security.gcm.AESGCMTransform` for the AEAD suites.  Nothing here logs:
callers count failures, key material stays inside.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pylibsrtp

from siprecd.security.gcm import AESGCMTransform
from siprecd.security.suites import SUITES, Suite
from siprecd.security.transform import AESCMTransform, TransformError

__all__ = ["InboundKeyRing", "InboundSRTP", "OutboundSRTCP", "OutboundSRTP", "SRTPError", "suite_named"]


# A carried-on context whose highest index is at or above this goes through the transform:
# its ROC is above 0, or its sequence numbers may wrap before the next packet after an outage
# (libsrtp, knowing nothing, would take ROC 0 for whatever comes first).
CARRIED_INDEX = 0x8000


#: What :attr:`InboundSRTP.direct_unprotect` raises for a packet that does not unprotect
#: (ValueError: longer than libsrtp's buffer).
DIRECT_ERRORS = (pylibsrtp.Error, ValueError)


class SRTPError(Exception):
    """A packet that does not authenticate, is replayed, or is malformed."""


def suite_named(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown SRTP suite {name!r} (known: {', '.join(SUITES)})") from None


_PACKET_BUFFER_SIZE = 1500
_shared = threading.local()


def _share_packet_buffer(session: pylibsrtp.Session) -> None:
    """Give ``session`` its thread's packet buffer instead of its own 1.5 KiB one.

    pylibsrtp 1.0 copies each packet into a per-session C buffer, runs libsrtp on it there and
    returns a copy: nothing stays in it between calls, so the sessions of one thread can share
    one (two per SRTP call, ~3 KiB of malloc per call; bench/README.md, memory).  siprecd's
    inbound contexts are created and used on the reactor thread.  Left alone if pylibsrtp's
    private attributes are not what this expects (another version).
    """
    own = getattr(session, "_cdata", None)
    if own is None or not hasattr(session, "_buffer") or len(own) != _PACKET_BUFFER_SIZE:
        return
    if not hasattr(_shared, "cdata"):
        _shared.cdata = pylibsrtp.ffi.new("char[]", _PACKET_BUFFER_SIZE)
        _shared.buffer = pylibsrtp.ffi.buffer(_shared.cdata)
    session._cdata = _shared.cdata
    session._buffer = _shared.buffer


class _Context:
    """One master key, one direction: pylibsrtp where it can, the Python transform otherwise."""

    def __init__(
        self,
        suite: str,
        master_key: bytes,
        master_salt: bytes,
        *,
        inbound: bool,
        encrypt_rtp: bool = True,
        encrypt_rtcp: bool = True,
        initial_roc: int | None = None,
        received: dict[int, int] | None = None,
        srtcp_next: dict[int, int] | None = None,
        rtcp_only: bool = False,
    ) -> None:
        self.suite = s = suite_named(suite)
        if len(master_key) != s.key_length or len(master_salt) != s.salt_length:
            raise ValueError(
                f"{s.name} needs a {s.key_length}-byte key and a {s.salt_length}-byte salt, "
                f"got {len(master_key)} and {len(master_salt)}"
            )
        self._libsrtp: pylibsrtp.Session | None = None
        self._python: AESCMTransform | AESGCMTransform | None = None
        plain = not (encrypt_rtp and encrypt_rtcp)
        # A context carried on (restart, takeover) whose ROC is or may soon be above 0, or
        # whose SRTCP index must continue: pylibsrtp 1.0 cannot be given either, the
        # project's transforms (AES-CM, and AES-GCM for the AEAD suites) can.  An explicit
        # initial_roc puts every suite on them too.
        carried = bool(srtcp_next) or any(index >= CARRIED_INDEX for index in (received or {}).values())
        self.carried_on = carried or initial_roc is not None
        # A context that only protects the SRS's receiver reports (one per rtcp_interval) gains
        # nothing from libsrtp's speed and would pay its ~6 KiB per stream (bench/README.md):
        # the AES-CM transform does those suites; AEAD ones stay with libsrtp.
        light = rtcp_only and not s.aead
        if s.libsrtp_profile is not None and not plain and not self.carried_on and not light:
            ssrc_type = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            self._libsrtp = pylibsrtp.Session(
                pylibsrtp.Policy(key=master_key + master_salt, ssrc_type=ssrc_type, srtp_profile=s.libsrtp_profile)
            )
            if inbound:
                _share_packet_buffer(self._libsrtp)
        elif s.aead and plain:
            raise ValueError(f"{s.name} cannot be used without encryption")
        elif s.aead:
            self._python = AESGCMTransform(
                master_key, master_salt, initial_roc=initial_roc or 0, received=received, srtcp_next=srtcp_next
            )
        else:
            self._python = AESCMTransform(
                master_key, master_salt, rtp_tag=s.rtp_tag, rtcp_tag=s.rtcp_tag,
                encrypt_rtp=encrypt_rtp, encrypt_rtcp=encrypt_rtcp, received=received, srtcp_next=srtcp_next,
                initial_roc=initial_roc or 0,
            )
        # The _32 suites: a second SRTCP context for peers that send 32-bit SRTCP tags.
        self._short_rtcp: AESCMTransform | None = None
        if inbound and not s.aead and s.rtp_tag < s.rtcp_tag:
            self._short_rtcp = AESCMTransform(
                master_key, master_salt, rtp_tag=s.rtp_tag, rtcp_tag=s.rtp_tag,
                encrypt_rtp=encrypt_rtp, encrypt_rtcp=encrypt_rtcp,
            )
        self._rtcp_short_first = False

    def rtp(self, packet: bytes, protect: bool) -> bytes:
        try:
            if self._libsrtp is not None:
                return self._libsrtp.protect(packet) if protect else self._libsrtp.unprotect(packet)
            assert self._python is not None
            return self._python.protect_rtp(packet) if protect else self._python.unprotect_rtp(packet)
        except (pylibsrtp.Error, TransformError, ValueError) as error:  # ValueError: too long
            raise SRTPError(f"SRTP {'protect' if protect else 'unprotect'} failed: {error}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        try:
            if self._libsrtp is not None:
                return self._libsrtp.protect_rtcp(packet)
            assert self._python is not None
            return self._python.protect_rtcp(packet)
        except (pylibsrtp.Error, TransformError) as error:
            raise SRTPError(f"SRTCP protect failed: {error}") from None

    def _unprotect_rtcp_full(self, packet: bytes) -> bytes:
        if self._libsrtp is not None:
            return self._libsrtp.unprotect_rtcp(packet)
        assert self._python is not None
        return self._python.unprotect_rtcp(packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        attempts = [self._unprotect_rtcp_full]
        if self._short_rtcp is not None:
            # Whichever tag length worked last is tried first: one HMAC per packet normally.
            attempts.insert(0 if self._rtcp_short_first else 1, self._short_rtcp.unprotect_rtcp)
        failure: Exception | None = None
        for attempt in attempts:
            try:
                plain = attempt(packet)
            except (pylibsrtp.Error, TransformError) as error:
                failure = failure or error
                continue
            self._rtcp_short_first = attempt is not self._unprotect_rtcp_full
            return plain
        raise SRTPError(f"SRTCP unprotect failed: {failure}")


def _mki_tags(suite: Suite, rtcp: bool) -> list[int]:
    """How many bytes follow the MKI: RFC 3711's tag (either SRTCP length of the _32 suites);
    0 for AEAD, whose MKI ends the packet after the tag (SRTP) or the index (SRTCP), RFC 7714
    §8/§9 as libsrtp writes it."""
    if suite.aead:
        return [0]
    return sorted({suite.rtcp_tag, suite.rtp_tag}, reverse=True) if rtcp else [suite.rtp_tag]


def _strip_mki(packet: bytes, mki: bytes, tag: int, what: str) -> bytes:
    # RFC 3711 §3.1: the MKI sits between the authenticated portion and the tag, unauthenticated.
    end = len(packet) - tag
    if end - len(mki) < 0 or packet[end - len(mki):end] != mki:
        raise SRTPError(f"{what} packet does not carry the negotiated MKI")
    return packet[: end - len(mki)] + packet[end:]


class InboundSRTP:
    """Unprotects what one peer sends under one master key (any SSRC, ROC and replay per SSRC).

    ``mki``: the key's Master Key Identifier when the SDES line gave one (the packets carry it).
    ``encrypt_rtp``/``encrypt_rtcp`` False: the UNENCRYPTED_SRTP/SRTCP session parameters
    (authentication only).  ``initial_roc``: the ROC of a stream resumed after a restart (for
    SSRCs not heard yet); given, the Python transforms run every suite (libsrtp cannot start
    above ROC 0), slower per packet; None (the default) keeps libsrtp's fast path.
    """

    def __init__(
        self,
        suite: str,
        master_key: bytes,
        master_salt: bytes,
        *,
        mki: bytes = b"",
        encrypt_rtp: bool = True,
        encrypt_rtcp: bool = True,
        initial_roc: int | None = None,
        received: dict[int, int] | None = None,
    ) -> None:
        """``received``: SSRC -> highest SRTP index authenticated before (a context carried on)."""
        self._context = _Context(
            suite, master_key, master_salt, inbound=True, encrypt_rtp=encrypt_rtp, encrypt_rtcp=encrypt_rtcp,
            initial_roc=initial_roc,
            received=received,
        )
        self.suite = self._context.suite
        self.mki = mki

    @property
    def on_libsrtp(self) -> bool:
        """True on pylibsrtp's fast path, False on siprecd's own transforms."""
        return self._context._libsrtp is not None

    @property
    def direct_unprotect(self) -> Callable[[bytes], bytes] | None:
        """pylibsrtp's own SRTP unprotect when nothing of siprecd's stands before it (libsrtp,
        no MKI), for the receiver to call straight (three Python calls less per packet); it
        raises one of :data:`DIRECT_ERRORS` where :meth:`unprotect_rtp` raises SRTPError."""
        libsrtp = self._context._libsrtp
        if libsrtp is None or self.mki:
            return None
        return libsrtp.unprotect  # type: ignore[no-any-return]

    def unprotect_rtp(self, packet: bytes) -> bytes:
        if self.mki:
            packet = _strip_mki(packet, self.mki, _mki_tags(self.suite, rtcp=False)[0], "SRTP")
        return self._context.rtp(packet, protect=False)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        if self.mki:
            # The MKI precedes the tag, whose length (for the _32 suites) is one of two.
            for tag in _mki_tags(self.suite, rtcp=True):
                try:
                    return self._context.unprotect_rtcp(_strip_mki(packet, self.mki, tag, "SRTCP"))
                except SRTPError:
                    continue
            raise SRTPError("SRTCP unprotect failed (MKI or authentication)")
        return self._context.unprotect_rtcp(packet)


class InboundKeyRing:
    """Several master keys offered in one SDES line, told apart by the MKI each packet carries."""

    def __init__(self, contexts: Sequence[InboundSRTP]) -> None:
        if not contexts:
            raise ValueError("a key ring needs at least one key")
        self.contexts = list(contexts)

    def _pick(self, packet: bytes, tags: Sequence[int]) -> list[InboundSRTP]:
        picked = []
        for context in self.contexts:
            for tag in tags:
                end = len(packet) - tag
                if end - len(context.mki) >= 0 and packet[end - len(context.mki):end] == context.mki:
                    picked.append(context)
                    break
        if not picked:
            raise SRTPError("packet carries none of the negotiated MKIs")
        return picked

    def unprotect_rtp(self, packet: bytes) -> bytes:
        return self._pick(packet, _mki_tags(self.contexts[0].suite, rtcp=False))[0].unprotect_rtp(packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        failure: SRTPError | None = None
        for context in self._pick(packet, _mki_tags(self.contexts[0].suite, rtcp=True)):
            try:
                return context.unprotect_rtcp(packet)
            except SRTPError as error:
                failure = error
        raise failure or SRTPError("SRTCP unprotect failed")


class OutboundSRTCP:
    """Protects the receiver reports the SRS sends, under the SRS's own SDES key.

    ``srtcp_next``: SSRC -> the first SRTCP index to use (a context carried on: above what the
    peer has seen, RFC 3711 §3.3.2); ``last_index`` is the last one used, for the state store.
    """

    _rtcp_only = True

    def __init__(
        self,
        suite: str,
        master_key: bytes,
        master_salt: bytes,
        *,
        encrypt_rtcp: bool = True,
        srtcp_next: dict[int, int] | None = None,
    ) -> None:
        self._context = _Context(
            suite, master_key, master_salt, inbound=False, encrypt_rtcp=encrypt_rtcp, srtcp_next=srtcp_next,
            rtcp_only=self._rtcp_only,
        )
        # libsrtp and the transform both number SRTCP from 1, one per packet protected.
        self.last_index = min((srtcp_next or {}).values(), default=1) - 1

    def protect_rtcp(self, packet: bytes) -> bytes:
        out = self._context.protect_rtcp(packet)
        self.last_index += 1
        return out


class OutboundSRTP(OutboundSRTCP):
    """SRTP and SRTCP protection for a sender (the test SRC; tools that make SRTP captures)."""

    _rtcp_only = False  # it protects RTP at packet rate: libsrtp

    def __init__(self, suite: str, master_key: bytes, master_salt: bytes, *, mki: bytes = b"") -> None:
        super().__init__(suite, master_key, master_salt)
        self.mki = mki
        self._tag = _mki_tags(self._context.suite, rtcp=False)[0]

    def protect_rtp(self, packet: bytes) -> bytes:
        out = self._context.rtp(packet, protect=True)
        if self.mki:
            out = out[: len(out) - self._tag] + self.mki + out[len(out) - self._tag:]
        return out
