"""Figure 2: SIPREC call setups per second with zero failed calls, SIPp against siprecd and the
same SIPp load against a SIPp UAS (the baseline), stepping the rate up until a step fails.

Each step runs ``sipp -sf bench/sipp/siprec_uac.xml -r RATE -m RATE*SECONDS`` (calls of 1 s:
INVITE with multipart SDP + metadata, 200, ACK, BYE, 200) and passes when SIPp made every call
and none failed (SIPp exits 0 only then; its stat file gives the counts).
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from bench.generator import LoadPlan
from bench.rtp import crypto_attribute, stream_key

SIPP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sipp")


@dataclass(frozen=True)
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    returncode: int

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and self.successful == self.calls and self.failed == 0


def _free_port() -> int:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.e2e.server import free_port

    return free_port((socket.SOCK_DGRAM,))


def read_stats(path: str) -> tuple[int, int]:
    """(successful, failed) calls from the last row of a SIPp ``-trace_stat`` CSV file."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    if not rows:
        raise ValueError(f"{path}: no statistics rows")
    last = rows[-1]
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])


def uac_scenario(directory: str, *, srtp: bool) -> str:
    """The UAC scenario's path; with ``srtp``, a copy offering RTP/SAVP with an SDES key (SIPp
    sends no media here, so one fixed key serves every call: the SRS still sets up its SRTP
    contexts and answers with its own key)."""
    path = os.path.join(SIPP_DIR, "siprec_uac.xml")
    if not srtp:
        return path
    with open(path) as handle:
        text = handle.read()
    offer = "RTP/AVP 0\n      a=rtpmap:0 PCMU/8000\n"
    if text.count(offer) != 2:
        raise ValueError(f"{path}: expected two PCMU m-lines to turn into RTP/SAVP")
    text = text.replace(offer, "RTP/SAVP 0\n      a=rtpmap:0 PCMU/8000\n      " + crypto_attribute(stream_key(b"sipp")) + "\n")
    derived = os.path.join(directory, "siprec_uac_srtp.xml")
    with open(derived, "w") as handle:
        handle.write(text)
    return derived


def run_step(server_port: int, rate: int, seconds: float, directory: str, scenario: str | None = None) -> Step:
    calls = max(1, int(rate * seconds))
    stat = os.path.join(directory, f"uac-{server_port}-{rate}.csv")
    command = [
        "sipp", "-sf", scenario or uac_scenario(directory, srtp=False), "-t", "u1", "-i", "127.0.0.1",
        "-p", str(_free_port()), "-mp", str(_free_port()), "-r", str(rate), "-m", str(calls),
        "-l", str(calls), "-nostdin", "-recv_timeout", "8000", "-timeout", f"{int(seconds + 30)}s",
        "-max_recv_loops", "100000", "-trace_stat", "-stf", stat, "-fd", "1",
        "-trace_err", "-error_file", os.path.join(directory, f"uac-{server_port}-{rate}.err"),
        f"127.0.0.1:{server_port}",
    ]
    completed = subprocess.run(command, capture_output=True, timeout=seconds + 60, cwd=directory)
    try:
        successful, failed = read_stats(stat)
    except (OSError, ValueError, KeyError):
        successful, failed = 0, calls
    return Step(rate, calls, successful, failed, completed.returncode)


def ladder(server_port: int, rates: list[int], seconds: float, directory: str, *, srtp: bool = False) -> list[Step]:
    """Steps up ``rates`` until one fails; every step run is returned."""
    steps = []
    scenario = uac_scenario(directory, srtp=srtp)
    for rate in rates:
        step = run_step(server_port, rate, seconds, directory, scenario)
        steps.append(step)
        if not step.passed:
            break
    return steps


def best(steps: list[Step]) -> int:
    return max((s.rate for s in steps if s.passed), default=0)


def against_sipp_uas(rates: list[int], seconds: float, directory: str, *, srtp: bool = False) -> list[Step]:
    port = _free_port()
    uas = subprocess.Popen(
        ["sipp", "-sf", os.path.join(SIPP_DIR, "uas.xml"), "-t", "u1", "-i", "127.0.0.1", "-p", str(port),
         "-mp", str(_free_port()), "-nostdin", "-max_recv_loops", "100000",
         "-trace_err", "-error_file", os.path.join(directory, "uas.err")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory,
    )
    try:
        return ladder(port, rates, seconds, directory, srtp=srtp)
    finally:
        uas.terminate()
        uas.wait(10)


def against_siprecd(rates: list[int], seconds: float, directory: str, *, at_rest: bool, srtp: bool = False,
                    overrides: dict[str, dict[str, str]] | None = None) -> list[Step]:
    from bench.media import Siprecd

    # Room for every call of the largest step at once (ports, max_sessions).
    plan = LoadPlan(calls=int(max(rates) * (seconds + 2)), rate=1, hold=0, direct_port=20000)
    server = Siprecd(plan, tempfile.mkdtemp(prefix="bench-cps-", dir=directory), at_rest=at_rest, overrides=overrides)
    server.start()
    try:
        return ladder(server.sip_address[1], rates, seconds, directory, srtp=srtp)
    finally:
        server.stop()
