"""Audio decoders for recorded RTP streams: RTP payload in, 16-bit little-endian PCM out.

One :class:`Decoder` per stream (G.722 and Opus keep state between packets).  The SDP layer asks
:func:`decoder_for` (or checks :data:`SUPPORTED_CODECS`) before answering, so a codec we cannot
decode is refused rather than recorded as noise.

======== ============= ============ ====================== ==================================
codec    RTP clock     output rate  1 RTP timestamp unit   library
======== ============= ============ ====================== ==================================
PCMU     8000          8000         1 output sample        stdlib ``audioop`` (C table lookup)
PCMA     8000          8000         1 output sample        stdlib ``audioop`` (C table lookup)
G722     8000 (quirk)  16000        2 output samples       PyAV (FFmpeg ``g722``)
opus     48000         48000        1 output sample        PyAV (FFmpeg ``libopus``)
======== ============= ============ ====================== ==================================

RFC 3551 section 4.5.2: G.722 is sampled at 16 kHz but its RTP clock runs at 8000 Hz; at
64 kbit/s one payload byte is two 16 kHz samples, i.e. exactly one RTP timestamp unit.

Nothing here raises on a bad payload: a packet the library rejects decodes to silence of the
packet's duration (when the duration can be known) and is counted in ``Decoder.errors``.
Loss and hold are the caller's to detect; :meth:`Decoder.conceal` gives the silence for them.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Final

with warnings.catch_warnings():
    # audioop is deprecated since 3.11 and gone in 3.13, where the audioop-lts package provides it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "SUPPORTED_CODECS",
    "STATIC_PAYLOAD_TYPES",
    "Decoder",
    "G711Decoder",
    "G722Decoder",
    "OpusDecoder",
    "decoder_for",
    "duration_of",
    "opus_packet_duration",
]

#: Encoding names (upper case) that :func:`decoder_for` can decode, for the SDP answer.
#: ``telephone-event`` is not audio to decode: the timeline handles it, the SDP layer keeps it.
SUPPORTED_CODECS: Final = frozenset({"PCMU", "PCMA", "G722", "OPUS"})

#: RFC 3551 static payload types an offer may use without an ``a=rtpmap`` line.
STATIC_PAYLOAD_TYPES: Final = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}

_BIG_ENDIAN = sys.byteorder == "big"


class Decoder:
    """A per-stream decoder.  Subclasses set the class attributes and implement ``decode``."""

    encoding: str = ""
    #: RTP timestamp clock rate (what the SDP says).
    clock_rate: int = 8000
    #: Sample rate of the PCM that ``decode`` returns.
    output_rate: int = 8000
    #: Channels of the PCM that ``decode`` returns (interleaved when 2).
    output_channels: int = 1
    #: Output samples (per channel) per RTP timestamp unit: output_rate // clock_rate.
    samples_per_timestamp_unit: int = 1

    def __init__(self) -> None:
        #: Packets the library refused (decoded as silence instead).
        self.errors = 0
        self._frame_bytes = 2 * self.output_channels

    def decode(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def duration(self, payload: bytes) -> int | None:
        """RTP timestamp units the payload covers; None if the payload is malformed."""
        return len(payload)

    def samples(self, timestamp_units: int) -> int:
        """Output samples (per channel) for a span of RTP timestamp units."""
        return timestamp_units * self.samples_per_timestamp_unit

    def conceal(self, timestamp_units: int) -> bytes:
        """Silence for a gap (loss, hold) of ``timestamp_units`` RTP timestamp units."""
        if timestamp_units <= 0:
            return b""
        return bytes(timestamp_units * self.samples_per_timestamp_unit * self._frame_bytes)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.encoding}/{self.clock_rate} -> {self.output_rate} Hz>"


class G711Decoder(Decoder):
    """PCMU/PCMA: a stateless 256-entry table lookup, done in C by ``audioop`` (~0.3 us/packet)."""

    clock_rate = 8000
    output_rate = 8000

    def __init__(self, encoding: str) -> None:
        super().__init__()
        self.encoding = encoding
        #: ``convert(payload, 2)``: native-order PCM (the recorder calls it directly per packet).
        self.convert = audioop.ulaw2lin if encoding == "PCMU" else audioop.alaw2lin

    def decode(self, payload: bytes) -> bytes:
        pcm = self.convert(payload, 2)
        return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


class _AVDecoder(Decoder):
    """Common part of the PyAV decoders: one open CodecContext per stream, reused."""

    def __init__(self, codec_names: tuple[str, ...], rate: int) -> None:
        super().__init__()
        import av  # noqa: PLC0415 - imported on first use: G.711-only deployments never load FFmpeg

        self._av = av
        self._packet = av.Packet
        self._errors = (av.FFmpegError, ValueError)
        context = None
        for name in codec_names:
            try:
                context = av.CodecContext.create(name, "r")
                break
            except (av.FFmpegError, ValueError):  # codec not compiled into this FFmpeg
                continue
        if context is None:
            raise LookupError(f"PyAV has none of the decoders {codec_names}")
        context.sample_rate = rate
        context.layout = "stereo" if self.output_channels == 2 else "mono"
        context.thread_count = 1  # thousands of contexts: never a thread pool per stream
        context.open()
        self.codec_name = context.codec.name
        self._context = context
        self._resampler = None  # only if the decoder's output is not packed s16

    def decode(self, payload: bytes) -> bytes:
        if not payload:  # an empty AVPacket would mean end of stream to FFmpeg
            self.errors += 1
            return b""
        try:
            frames = self._context.decode(self._packet(payload))
        except self._errors:
            self.errors += 1
            units = self.duration(payload)
            return self.conceal(units) if units else b""
        frame_bytes = self._frame_bytes
        out = []
        for frame in frames:
            if frame.format.name != "s16":
                frame = self._convert(frame)
                if frame is None:
                    continue
            out.append(memoryview(frame.planes[0])[: frame.samples * frame_bytes].tobytes())
        return out[0] if len(out) == 1 else b"".join(out)

    def _convert(self, frame):  # noqa: ANN001, ANN202
        if self._resampler is None:
            self._resampler = self._av.AudioResampler(
                format="s16", layout=self._context.layout.name, rate=self.output_rate
            )
        converted = self._resampler.resample(frame)
        return converted[0] if converted else None


class G722Decoder(_AVDecoder):
    """G.722 at 64 kbit/s (the only RTP mode): 1 byte = 2 samples at 16 kHz = 1 RTP unit."""

    encoding = "G722"
    clock_rate = 8000
    output_rate = 16000
    samples_per_timestamp_unit = 2

    def __init__(self) -> None:
        super().__init__(("g722",), 16000)


# RFC 6716 section 3.1: the TOC byte's config (top 5 bits) fixes the frame size.  In 48 kHz
# samples: SILK 10/20/40/60 ms (configs 0-11), hybrid 10/20 ms (12-15), CELT 2.5/5/10/20 ms (16-31).
OPUS_FRAME_SAMPLES: Final = tuple(
    [480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4
)
OPUS_MAX_PACKET_SAMPLES: Final = 5760  # 120 ms


def opus_packet_duration(packet: bytes) -> int | None:
    """Samples at 48 kHz in one Opus packet (RFC 6716 section 3.2), None if malformed."""
    if not packet:
        return None
    toc = packet[0]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    elif len(packet) < 2:
        return None
    else:
        frames = packet[1] & 0x3F
        if frames == 0:
            return None
    samples = frames * OPUS_FRAME_SAMPLES[toc >> 3]
    return samples if samples <= OPUS_MAX_PACKET_SAMPLES else None


class OpusDecoder(_AVDecoder):
    """Opus (RFC 7587): RTP clock 48000 whatever the coded bandwidth; mono or stereo output.

    libopus itself downmixes a stereo stream to mono output (or upmixes), so a stream is decoded
    straight to the channel count the recording needs.  FFmpeg's native ``opus`` decoder is the
    fallback when the bundled FFmpeg lacks libopus (its float output is converted by PyAV).
    """

    encoding = "OPUS"
    clock_rate = 48000
    output_rate = 48000
    codec_names = ("libopus", "opus")  # first available wins

    def __init__(self, output_channels: int = 1) -> None:
        if output_channels not in (1, 2):
            raise ValueError("Opus output is mono or stereo")
        self.output_channels = output_channels
        super().__init__(self.codec_names, 48000)

    def duration(self, payload: bytes) -> int | None:
        return opus_packet_duration(payload)


def decoder_for(encoding: str, clock_rate: int, channels: int = 1, *, output_channels: int = 1) -> Decoder | None:
    """A new decoder for one stream, or None if the codec (or its parameters) is unsupported.

    ``encoding``, ``clock_rate`` and ``channels`` are the ``a=rtpmap`` values (encoding names are
    case-insensitive; Opus is always ``opus/48000/2`` in SDP, RFC 7587).  ``output_channels``
    applies to Opus only; the other codecs are mono.
    """
    name = encoding.upper()
    if name in ("PCMU", "PCMA"):
        if clock_rate == 8000 and channels == 1:
            return G711Decoder(name)
        return None
    if name == "G722":
        if clock_rate == 8000 and channels == 1:
            try:
                return G722Decoder()
            except (ImportError, LookupError):
                return None
        return None
    if name == "OPUS":
        if clock_rate == 48000 and channels in (1, 2) and output_channels in (1, 2):
            try:
                return OpusDecoder(output_channels)
            except (ImportError, LookupError):
                return None
        return None
    return None


def duration_of(decoders: Mapping[int, Decoder]) -> Callable[[int, bytes], int | None]:
    """``(payload_type, payload) -> RTP units or None`` over one stream's decoders by payload type
    (the shape :class:`~siprecd.media.timeline` takes); None for a payload type without one."""

    def duration(payload_type: int, payload: bytes) -> int | None:
        decoder = decoders.get(payload_type)
        return decoder.duration(payload) if decoder is not None else None

    return duration
