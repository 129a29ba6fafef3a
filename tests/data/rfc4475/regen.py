#!/usr/bin/env python3
"""Regenerate the RFC 4475 ``*.dat`` files from ``rfc4475-messages.txt``.

``rfc4475-messages.txt`` holds every message of RFC 4475 section 3 in the
RFC's own markup (section 2): ``<allOneLine>`` blocks, ``<hex>`` octets and
``<repeat count=N>`` runs, one wire line per source line, messages separated
by ``=== name`` lines.  Every source line becomes one CRLF-terminated line on
the wire, so an empty source line is an empty wire line.

Usage::

    python3 tests/data/rfc4475/regen.py           # rewrite the .dat files
    python3 tests/data/rfc4475/regen.py --check   # compare with SHA256SUMS

This is a maintenance tool, not a test; nothing imports it.
"""

import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "rfc4475-messages.txt")
SUMS = os.path.join(HERE, "SHA256SUMS")


def parse_source(text):
    messages = {}
    current = None
    for line in text.split("\n"):
        if line.startswith("=== "):
            current = line[4:]
            if current == "END":
                break
            messages[current] = []
            continue
        if current is not None:
            messages[current].append(line)
    return messages


def render(lines):
    logical = []
    block = None
    for line in lines:
        if line == "<allOneLine>":
            block = []
        elif line == "</allOneLine>":
            logical.append("".join(block))
            block = None
        elif block is not None:
            block.append(line)
        else:
            logical.append(line)
    text = "".join(line + "\r\n" for line in logical)
    text = re.sub(
        r"<repeat count=(\d+)>(.*?)</repeat>",
        lambda m: m.group(2) * int(m.group(1)),
        text,
        flags=re.S,
    )
    data = text.encode("ascii")
    return re.sub(
        rb"<hex>(.*?)</hex>",
        lambda m: bytes.fromhex(re.sub(rb"\s", b"", m.group(1)).decode("ascii")),
        data,
        flags=re.S,
    )


def main(argv):
    with open(SOURCE, encoding="ascii") as f:
        messages = parse_source(f.read())
    rendered = {name: render(lines) for name, lines in messages.items()}
    if "--check" in argv:
        expected = {}
        with open(SUMS, encoding="ascii") as f:
            for line in f:
                digest, name = line.split()
                expected[name] = digest
        bad = 0
        for name, data in sorted(rendered.items()):
            fname = name + ".dat"
            got = hashlib.sha256(data).hexdigest()
            with open(os.path.join(HERE, fname), "rb") as f:
                on_disk = hashlib.sha256(f.read()).hexdigest()
            if not (got == on_disk == expected.get(fname)):
                print("MISMATCH", fname)
                bad += 1
        print(f"{len(rendered) - bad}/{len(rendered)} match")
        return 1 if bad else 0
    for name, data in rendered.items():
        with open(os.path.join(HERE, name + ".dat"), "wb") as f:
            f.write(data)
    print(f"wrote {len(rendered)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
