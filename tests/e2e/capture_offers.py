"""Capture the INVITEs that linphonec and baresip send for each kind of secured call.

    .venv/bin/python -m tests.e2e.capture_offers tests/data/peers

Starts a siprecd (``accept_plain_calls = true``) on loopback, lets each peer call it once per
variant and writes every INVITE the peer sent (first offer, and any re-INVITE) to
``DIR/<variant>-<n>.sip`` (n = 1 for the first offer), exactly as the peer's own trace shows it.  Whether siprecd answers 200
or 488 only changes how far the call gets; the offer is the peer's either way.
"""

from __future__ import annotations

import os
import sys
import tempfile

from tests.e2e.peers import Baresip, Linphone, write_tone
from tests.e2e.server import Server

VARIANTS = {
    "linphonec-sdes-aes128-80": lambda d: Linphone(d, encryption="srtp", suites=["AES_CM_128_HMAC_SHA1_80"]),
    "linphonec-sdes-aes256-80": lambda d: Linphone(d, encryption="srtp", suites=["AES_256_CM_HMAC_SHA1_80"]),
    "linphonec-sdes-default-suites": lambda d: Linphone(d, encryption="srtp"),
    # Not mandatory: linphonec then offers the keys on RTP/AVP (RFC 4568 best effort).
    "linphonec-sdes-optional": lambda d: Linphone(d, encryption="srtp", mandatory=False),
    "linphonec-dtls": lambda d: Linphone(d, encryption="dtls"),
    "baresip-srtp-mand": lambda d: Baresip(d, mediaenc="srtp-mand"),
    "baresip-srtp-optional": lambda d: Baresip(d, mediaenc="srtp"),
    "baresip-srtp-mandf": lambda d: Baresip(d, mediaenc="srtp-mandf"),
    "baresip-dtls_srtp": lambda d: Baresip(d, mediaenc="dtls_srtp"),
}


def main(output: str, sections: dict[str, dict[str, str]] | None = None) -> None:
    os.makedirs(output, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="siprecd-capture-") as work:
        server = Server(os.path.join(work, "server"), sections={"siprec": {"accept_plain_calls": "true"}, **(sections or {})})
        server.start()
        try:
            for name, make in VARIANTS.items():
                peer = make(os.path.join(work, name))
                wav = write_tone(os.path.join(peer.directory, "tone.wav"), 523.0, 5)
                call = peer.call(f"sip:srs@127.0.0.1:{server.sip_port}", wav, 2.0)
                invites = call.invites()
                for number, invite in enumerate(invites, 1):
                    with open(os.path.join(output, f"{name}-{number}.sip"), "w", newline="") as handle:
                        handle.write(invite)
                print(f"{name}: {len(invites)} INVITE(s), connected={call.connected}")
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/peers")
