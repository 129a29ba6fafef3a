"""Writes classic pcap files of Ethernet/IPv4/UDP frames: the RTP SIPp's ``play_pcap_audio``
replays byte for byte (so pre-encrypted SRTP reaches the SRS as it was protected here)."""

from __future__ import annotations

import struct
from collections.abc import Sequence


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_pcap(
    path: str,
    datagrams: Sequence[bytes],
    *,
    interval: float = 0.02,
    source: tuple[str, int] = ("192.0.2.1", 6000),
    destination: tuple[str, int] = ("192.0.2.2", 6002),
) -> None:
    """One UDP datagram every ``interval`` seconds (SIPp keeps the capture's pace)."""
    src_ip = bytes(int(part) for part in source[0].split("."))
    dst_ip = bytes(int(part) for part in destination[0].split("."))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # linktype 1: Ethernet
    for index, payload in enumerate(datagrams):
        udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), index & 0xFFFF, 0, 64, 17, 0, src_ip, dst_ip)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp
        micros = round(index * interval * 1_000_000)
        out.append(struct.pack("<IIII", 1_700_000_000 + micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    with open(path, "wb") as handle:
        handle.write(b"".join(out))
