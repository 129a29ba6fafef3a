"""``siprecctl``: the operator's tool for encrypted recordings and keys.

    siprecctl [--config FILE] decrypt IN OUT
    siprecctl [--config FILE] verify PATH...
    siprecctl [--config FILE] rewrap PATH...
    siprecctl [--config FILE] keys list
    siprecctl [--config FILE] keys rotate

The key store comes from the ``[encryption]`` section of the same configuration twistd reads
(and ``SIPRECD_ENCRYPTION_PASSPHRASE``).  Exit codes: 0 success; 1 a file did not verify (truncated,
tampered, unknown key) or a key operation failed; 2 a usage, configuration or I/O error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from siprecd.config import ConfigError, load_config
from siprecd.crypto.keystore import KeyStoreError
from siprecd.crypto.stores import key_store_from_config
from siprecd.ctl.files import cmd_decrypt, cmd_rewrap, cmd_verify
from siprecd.ctl.keys import cmd_keys_list, cmd_keys_rotate

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="siprecctl",
        description="Decrypt, verify and re-wrap siprecd recordings; list and rotate keys.",
        epilog="Exit codes: 0 ok; 1 a file did not verify or a key operation failed; "
        "2 usage, configuration or I/O error.",
    )
    top.add_argument("--config", "-c", help="siprecd INI file (default: embedded defaults)")
    commands = top.add_subparsers(dest="command", required=True)
    decrypt = commands.add_parser("decrypt", help="decrypt IN to OUT (WAV sizes fixed up)")
    decrypt.add_argument("input")
    decrypt.add_argument("output")
    verify = commands.add_parser("verify", help="check every chunk of each file")
    verify.add_argument("paths", nargs="+")
    rewrap = commands.add_parser("rewrap", help="re-wrap data keys under the newest key")
    rewrap.add_argument("paths", nargs="+")
    keys = commands.add_parser("keys", help="key-encryption keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("list", help="list every key, oldest first")
    key_commands.add_parser("rotate", help="make a new current key now")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        config = load_config(arguments.config, os.environ)
    except ConfigError as error:
        print(f"siprecctl: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = key_store_from_config(config.encryption, os.environ, ephemeral_ok=False)
    except KeyStoreError as error:
        print(f"siprecctl: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    if arguments.command == "decrypt":
        return cmd_decrypt(arguments.input, arguments.output, store)
    if arguments.command == "verify":
        return cmd_verify(arguments.paths, store)
    if arguments.command == "rewrap":
        return cmd_rewrap(arguments.paths, store)
    if arguments.keys_command == "list":
        return cmd_keys_list(store)
    return cmd_keys_rotate(store)


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
