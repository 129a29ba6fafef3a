"""Ogg Opus (RFC 7845) passthrough: received Opus RTP payloads stored without re-encoding.

Each RTP payload is one Opus packet (RFC 7587) and becomes one Ogg packet.  The file starts with
the ID header (``OpusHead``) alone on page 0 and the comment header (``OpusTags``) on page 1,
both at granule position 0; audio pages follow.  Granule positions count 48 kHz samples
(pre-skip included), computed from each packet's TOC (RFC 6716 section 3.1).

Gaps (loss, hold, DTX pauses) are filled with packets, never with a bare granule jump (which
would make the granule positions disagree with the decoded length, invalid in Ogg Opus):

- the first ``plc_limit`` (100 ms) of a gap as RFC 7845 section 4.1 asks: packets whose frames
  are zero bytes long, which make the decoder run its packet loss concealment.  They reuse the
  last packet's mode, bandwidth, channels and frame size, in code 3 packets of up to 120 ms
  (2 bytes each); only a remainder that is not a whole number of those frames is made of
  smaller CELT frames, at the end of that part;
- the rest of a longer gap (hold) as CELT silence frames (``ff fe``: the silence flag, exactly
  what libopus itself emits for digital silence), six 20 ms frames per 14-byte packet.
  libopus's concealment does not fade to zero (it keeps a -30 dBFS noise going for as long as
  the gap lasts), and a recording of a call on hold should be silent.

Gap lengths are counted in 2.5 ms units (the smallest Opus frame); a remainder is carried to the
next gap, so the file never drifts from the RTP timeline by 2.5 ms or more.

``pre_skip`` defaults to 0: the stream is cut from a live call, so no encoder delay of ours is
to be removed, and sample n of the file is then RTP sample n (what aligns it with the other
streams and the metadata).

Pages are written whole, one ``write`` per page; a page closes after ``page_duration`` samples
(1 s) or ``chunk_size`` bytes, so a stream writes about once a second and memory stays at one
page.  A kill loses at most the open page; :mod:`siprecd.recording.recovery` trims a torn last
page of a ``.part`` file and publishes it.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable

from siprecd.media.codecs import OPUS_FRAME_SAMPLES, opus_packet_duration
from siprecd.recording.wav import DEFAULT_CHUNK_SIZE, PartFile, RecordingWriteError

__all__ = [
    "OggOpusWriter",
    "ogg_crc",
    "ogg_page",
    "opus_head",
    "opus_tags",
    "plc_packets",
    "silence_packets",
]

# The Ogg CRC (RFC 3533) is CRC-32 with polynomial 0x04C11DB7, no bit reflection, initial value
# 0 and no final xor.  zlib's CRC-32 is the reflected form of the same polynomial, so the Ogg
# CRC of data is the bit-reversal of zlib's raw CRC of the bit-reversed data: both steps run in
# C (bytes.translate, zlib.crc32) instead of a Python loop over every byte.
_REVERSE_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes | bytearray) -> int:
    raw = zlib.crc32(bytes(data).translate(_REVERSE_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


_PAGE_HEADER = struct.Struct("<4sBBqIIIB")
BOS, EOS = 0x02, 0x04


def ogg_page(packets: Iterable[bytes], *, granule: int, serial: int, sequence: int, flags: int = 0) -> bytes:
    """One Ogg page holding whole packets (none continues onto another page)."""
    lacing = bytearray()
    body = bytearray()
    for packet in packets:
        size = len(packet)
        lacing += b"\xff" * (size // 255)
        lacing.append(size % 255)
        body += packet
    if len(lacing) > 255:
        raise ValueError("too many segments for one Ogg page")
    page = bytearray(_PAGE_HEADER.pack(b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing)))
    page += lacing
    page += body
    struct.pack_into("<I", page, 22, ogg_crc(page))
    return bytes(page)


def opus_head(channels: int, pre_skip: int = 0, input_sample_rate: int = 48000, output_gain: int = 0) -> bytes:
    """RFC 7845 section 5.1 ID header, channel mapping family 0 (mono or stereo)."""
    return struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, pre_skip, input_sample_rate, output_gain, 0)


def opus_tags(vendor: str, comments: Iterable[tuple[str, str]] = ()) -> bytes:
    """RFC 7845 section 5.2 comment header."""
    vendor_bytes = vendor.encode()
    entries = [f"{key}={value}".encode() for key, value in comments]
    parts = [b"OpusTags", struct.pack("<I", len(vendor_bytes)), vendor_bytes, struct.pack("<I", len(entries))]
    for entry in entries:
        parts += [struct.pack("<I", len(entry)), entry]
    return b"".join(parts)


# For a gap's remainder: CELT configs with the same audio bandwidth as the packet before it.
# Bandwidth of each config (0 NB, 1 MB, 2 WB, 3 SWB, 4 FB), RFC 6716 table 2.
_CONFIG_BANDWIDTH = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 2 + [4] * 2 + [0] * 4 + [2] * 4 + [3] * 4 + [4] * 4
_CELT_BASE = {0: 16, 1: 20, 2: 20, 3: 24, 4: 28}  # CELT has no medium band: use wideband
_CELT_SIZES = ((960, 3), (480, 2), (240, 1), (120, 0))  # (samples, offset from the base config)
DEFAULT_PLC_TOC = (31 << 3)  # CELT fullband 20 ms, mono: for a gap before the first packet
GAP_UNIT = 120  # 2.5 ms at 48 kHz


def _empty_frames(config: int, stereo: int, frames: int) -> bytes:
    """One packet of ``frames`` zero-length frames: code 0 (1 byte) or code 3 CBR (2 bytes)."""
    if frames == 1:
        return bytes([config << 3 | stereo << 2])
    return bytes([config << 3 | stereo << 2 | 3, frames])


SILENCE_FRAME = b"\xff\xfe"  # a CELT frame with the silence flag set (RFC 6716 section 4.3)
_CELT_FB_SILENCE = ((960, 31), (480, 30), (240, 29), (120, 28))  # (samples, CELT fullband config)


def silence_packets(duration: int, stereo: int = 0) -> list[bytes]:
    """Packets of CELT silence frames covering ``duration`` samples (a multiple of 120)."""
    packets = []
    for size, config in _CELT_FB_SILENCE:
        count, duration = divmod(duration, size)
        per_packet = min(48, 5760 // size)
        while count:
            frames = min(count, per_packet)
            toc = config << 3 | stereo << 2
            if frames == 1:
                packets.append(bytes([toc]) + SILENCE_FRAME)
            else:
                packets.append(bytes([toc | 3, frames]) + SILENCE_FRAME * frames)
            count -= frames
    return packets


def plc_packets(duration: int, toc: int = DEFAULT_PLC_TOC) -> list[bytes]:
    """Packets that conceal ``duration`` samples (a multiple of 120) after a packet with ``toc``."""
    config, stereo = toc >> 3, (toc >> 2) & 1
    frame = OPUS_FRAME_SAMPLES[config]
    packets = []
    whole, remainder = divmod(duration, frame)
    per_packet = 5760 // frame  # 120 ms per packet at most (48 frames at 2.5 ms)
    while whole:
        count = min(whole, per_packet)
        packets.append(_empty_frames(config, stereo, count))
        whole -= count
    base = _CELT_BASE[_CONFIG_BANDWIDTH[config]]
    for size, offset in _CELT_SIZES:
        count, remainder = divmod(remainder, size)
        if count:
            packets.append(_empty_frames(base + offset, stereo, count))
    return packets


class OggOpusWriter:
    """Writes one Opus stream to ``path + '.part'``; :meth:`finalize` publishes it as ``path``.

    ``write(payload)`` takes each RTP payload in order; ``conceal(samples)`` fills a gap of that
    many 48 kHz samples (what the timeline measured from RTP timestamps).  Malformed payloads
    (empty, bad TOC, over 120 ms) are dropped and counted in ``dropped``: one bad packet must not
    make the whole file undecodable.
    """

    def __init__(
        self,
        path: str,
        *,
        channels: int = 1,
        pre_skip: int = 0,
        input_sample_rate: int = 48000,
        tags: Iterable[tuple[str, str]] = (),
        vendor: str = "siprecd",
        serial: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        page_duration: int = 48000,
        plc_limit: int = 4800,
        mode: int = 0o640,
    ) -> None:
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        self.path = path
        self.plc_limit = plc_limit
        self.channels = channels
        self.pre_skip = pre_skip
        self.serial = serial if serial is not None else int.from_bytes(os.urandom(4), "little")
        self.chunk_size = chunk_size
        self.page_duration = page_duration
        #: Granule position after the last packet accepted (48 kHz samples, pre-skip included).
        self.granule = pre_skip
        self.packets = 0
        self.dropped = 0
        self.failed: RecordingWriteError | None = None
        self.finalized = False
        self._sequence = 0
        self._page: list[bytes] = []
        self._page_segments = 0
        self._page_bytes = 0
        self._page_start = pre_skip
        self._last_toc = DEFAULT_PLC_TOC | (4 if channels == 2 else 0)
        self._gap_remainder = 0
        self._gap_run = 0  # samples of the current gap already filled
        self._last_page: tuple[int, int]  # (offset, length) of the last page written
        self._file = PartFile(path, mode=mode)
        self.part_path = self._file.part_path
        headers = self._page_bytes_for([opus_head(channels, pre_skip, input_sample_rate)], 0, BOS)
        comments = self._page_bytes_for([opus_tags(vendor, tags)], 0, 0)
        # Until audio arrives, the comment page is the last page (it gets EOS if none comes).
        self._last_page = (len(headers), len(comments))
        headers += comments
        try:
            self._file.write(headers)
        except RecordingWriteError as e:
            self.failed = e
            self._file.close()
            raise

    @property
    def bytes_written(self) -> int:
        """Bytes appended to the file so far (Ogg pages, headers included)."""
        return self._file.written

    @property
    def duration(self) -> int:
        """Samples (48 kHz) of audio accepted so far, pre-skip excluded."""
        return self.granule - self.pre_skip

    def write(self, payload: bytes) -> None:
        if self.failed is not None:
            raise self.failed
        if self.finalized:
            raise ValueError("write after finalize")
        samples = opus_packet_duration(payload)
        if samples is None or len(payload) > 255 * 255:
            self.dropped += 1
            return
        self._last_toc = payload[0]
        self._gap_run = 0
        self._add(bytes(payload), samples)

    def conceal(self, samples: int) -> None:
        """Fill a gap of ``samples`` (48 kHz): concealment first, then silence (see above).

        Consecutive calls (a timeline reporting a hold in steps) count as one gap.
        """
        if self.failed is not None:
            raise self.failed
        if samples <= 0:
            return
        total = samples + self._gap_remainder
        self._gap_remainder = total % GAP_UNIT
        total -= self._gap_remainder
        if not total:
            return
        concealed = min(total, max(0, self.plc_limit - self._gap_run))
        concealed -= concealed % GAP_UNIT
        self._gap_run += total
        stereo = 1 if self.channels == 2 else 0
        for packet in plc_packets(concealed, self._last_toc) + silence_packets(total - concealed, stereo):
            self._add(packet, opus_packet_duration(packet) or 0)

    def flush(self) -> None:
        """Close the open page and write it."""
        if self.failed is not None:
            raise self.failed
        self._write_page(0)

    def finalize(self) -> str:
        """Write the last page (end of stream), fsync and publish under the final name."""
        if self.finalized:
            return self.path
        try:
            if self.failed is None:
                try:
                    if self._page:
                        self._write_page(EOS)
                    else:
                        self._mark_last_page_eos()
                except RecordingWriteError:
                    pass
            if self.failed is not None:
                # Keep only whole pages: cut a page that a failed write left torn.
                offset, length = self._last_page
                self._file.truncate(offset + length)
            path = self._file.publish()
        except RecordingWriteError:
            self._file.close()
            raise
        self.finalized = True
        return path

    def close(self) -> None:
        self._page = []
        self._file.close()

    # -- pages

    def _add(self, packet: bytes, samples: int) -> None:
        segments = len(packet) // 255 + 1
        if self._page and (
            self._page_segments + segments > 255 or self._page_bytes + len(packet) > self.chunk_size
        ):
            self._write_page(0)
        self._page.append(packet)
        self._page_segments += segments
        self._page_bytes += len(packet)
        self.granule += samples
        self.packets += 1
        if self.granule - self._page_start >= self.page_duration:
            self._write_page(0)

    def _page_bytes_for(self, packets: list[bytes], granule: int, flags: int) -> bytes:
        page = ogg_page(packets, granule=granule, serial=self.serial, sequence=self._sequence, flags=flags)
        self._sequence += 1
        return page

    def _write_page(self, flags: int) -> None:
        if not self._page:
            return
        page = self._page_bytes_for(self._page, self.granule, flags)
        self._page = []
        self._page_segments = 0
        self._page_bytes = 0
        self._page_start = self.granule
        offset = self._file.size
        try:
            self._file.write(page)
        except RecordingWriteError as e:
            self.failed = e
            raise
        self._last_page = (offset, len(page))

    def _mark_last_page_eos(self) -> None:
        offset, length = self._last_page
        page = bytearray(self._file.pread(length, offset))
        page[5] |= EOS
        page[22:26] = b"\0\0\0\0"
        struct.pack_into("<I", page, 22, ogg_crc(page))
        try:
            self._file.pwrite(bytes(page[5:26]), offset + 5)  # flags .. CRC
        except RecordingWriteError as e:
            self.failed = e
            raise
