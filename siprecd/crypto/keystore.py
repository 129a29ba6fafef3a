"""Key-encryption keys (KEKs): the keys that wrap each recording file's own data key.

Two stores share one small interface (:class:`KeyStore`): ``current()`` is the KEK new files are
wrapped with, ``get(kek_id)`` finds any KEK an older file names, ``rotate()`` makes a new current
KEK (older ones stay, for decryption), ``list()`` gives them all, oldest first.

* :class:`MemoryKeyStore`: for tests and ephemeral deployments (keys die with the process).
* :class:`FileKeyStore`: a directory (mode 0700, owned by the server's user) with one JSON file
  per KEK, ``<kek_id>.key`` (mode 0600), written atomically (temporary file, fsync, rename, fsync
  of the directory).  With a passphrase (``SIPRECD_ENCRYPTION_PASSPHRASE``) each KEK is wrapped
  with AES-256-GCM under a key derived by scrypt (cost = log2 N, r=8, p=1) or
  PBKDF2-HMAC-SHA256 (cost = iterations); without one the KEK is stored in clear and only the
  file permissions protect it.  A store is either all wrapped or all in clear: a passphrase
  given to a clear store, or a wrapped store opened without one, is refused in plain words.

KEK ids look like ``k-20261122T041500Z-0c3a91f2``: the creation time in UTC, then 5 hex digits
of microseconds and 3 random hex digits, so ids sort in creation order (a store never lets a
new KEK's creation time go back past its newest one, even if the clock steps back).

Each key file records its own KDF name, cost and salt.  A new KEK reuses the salt of the newest
KEK when the KDF and cost are unchanged, so the expensive derivation runs once per store (at
start-up), not once per key, and a rotation inside the reactor costs one AES-GCM operation.
Derived keys are cached per (KDF, cost, salt); unwrapped KEKs are cached by id (key files are
never changed once written).

Another process (``siprecctl keys rotate``) may add KEKs while the server runs: the server sees
them because ``current()`` re-lists the directory whenever its modification time changed (or is
too recent to be trusted, as git does for its index), and ``get()`` reads a file it has not seen.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import math
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from siprecd.durable import atomic_write

PASSPHRASE_VARIABLE = "SIPRECD_ENCRYPTION_PASSPHRASE"
KEY_SIZE = 32
FORMAT = "siprecd-kek-1"
SUFFIX = ".key"
KEK_ID = re.compile(r"k-\d{8}T\d{6}Z-[0-9a-f]{8}\Z")

# kdf -> (default cost, lowest, highest).  scrypt's cost is log2 N with r=8: 2**20 needs 1 GiB.
KDF_COST = {"scrypt": (15, 1, 20), "pbkdf2": (600_000, 1, 10_000_000)}
_KDF_NAME = {"scrypt": "scrypt", "pbkdf2": "pbkdf2-hmac-sha256"}
_SCRYPT_R, _SCRYPT_P = 8, 1
_SALT_SIZE, _NONCE_SIZE = 16, 12
_MAX_KEY_FILE = 64 * 1024
_MAX_PROBLEMS_LISTED = 20
# A directory listing is trusted only once its mtime is this old (filesystem timestamps are
# coarse: a change in the same tick as the last one would not move the mtime).
_RACY_NS = 2_000_000_000


class KeyStoreError(Exception):
    """A key store cannot be used; the message says what and where in plain words.

    ``problems``: every problem found (``check()`` collects them all), one sentence each.
    """

    def __init__(self, message: str | list[str]) -> None:
        problems = [message] if isinstance(message, str) else list(message)
        self.problems = problems
        if len(problems) == 1:
            text = problems[0]
        else:
            shown = problems[:_MAX_PROBLEMS_LISTED]
            text = f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in shown)
            if len(problems) > len(shown):
                text += f"\n  - ... and {len(problems) - len(shown)} more"
        super().__init__(text)


class Kek(NamedTuple):
    kek_id: str
    key: bytes  # 32 bytes
    created: float  # unix time

    def __repr__(self) -> str:  # never put key material in logs or tracebacks
        return f"Kek(kek_id={self.kek_id!r}, created={self.created!r}, key=<{len(self.key)} bytes>)"


@runtime_checkable
class KeyStore(Protocol):
    def current(self) -> Kek:
        """The newest KEK (new files are wrapped with it); creates the first one if needed."""

    def get(self, kek_id: str) -> Kek | None:
        """The KEK with this id, or None if the store has none."""

    def rotate(self) -> Kek:
        """Create a new KEK and make it current; older ones stay for decryption."""

    def list(self) -> list[Kek]:
        """Every KEK, oldest first."""


def new_kek(clock: Callable[[], float], newest: Kek | None) -> Kek:
    """A fresh random KEK created now, never earlier than ``newest`` (so ids keep their order)."""
    micros = max(0, math.floor(clock() * 1_000_000))
    if newest is not None:
        micros = max(micros, round(newest.created * 1_000_000) + 1)
    seconds, fraction = divmod(micros, 1_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))
    kek_id = f"k-{stamp}-{fraction:05x}{secrets.randbelow(0x1000):03x}"
    return Kek(kek_id, secrets.token_bytes(KEY_SIZE), micros / 1_000_000)


class MemoryKeyStore:
    """KEKs in a dict: for tests and for deployments that accept losing them at exit."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keks: dict[str, Kek] = {}  # in creation order

    def current(self) -> Kek:
        if not self._keks:
            return self.rotate()
        return next(reversed(self._keks.values()))

    def get(self, kek_id: str) -> Kek | None:
        return self._keks.get(kek_id)

    def rotate(self) -> Kek:
        newest = next(reversed(self._keks.values())) if self._keks else None
        kek = new_kek(self._clock, newest)
        self._keks[kek.kek_id] = kek
        return kek

    def list(self) -> list[Kek]:
        return [*self._keks.values()]

    def check(self) -> None:
        """Nothing can be wrong with memory (here for symmetry with FileKeyStore)."""


class _Kdf(NamedTuple):
    kdf: str  # "scrypt" | "pbkdf2"
    cost: int
    salt: bytes

    def to_json(self) -> dict[str, Any]:
        salt = _b64encode(self.salt)
        if self.kdf == "scrypt":
            return {"name": "scrypt", "log2_n": self.cost, "r": _SCRYPT_R, "p": _SCRYPT_P, "salt": salt}
        return {"name": _KDF_NAME["pbkdf2"], "iterations": self.cost, "salt": salt}


class _Missing(Exception):
    pass


class FileKeyStore:
    """KEKs as files in a private directory; see the module docstring for the format."""

    def __init__(
        self,
        directory: str,
        *,
        passphrase: str | None,
        kdf: str = "scrypt",
        kdf_cost: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if kdf not in KDF_COST:
            raise KeyStoreError(f"unknown key derivation {kdf!r}: use scrypt or pbkdf2")
        default, lowest, highest = KDF_COST[kdf]
        cost = default if kdf_cost is None else kdf_cost
        if not isinstance(cost, int) or not lowest <= cost <= highest:
            unit = "log2 of N" if kdf == "scrypt" else "iterations"
            raise KeyStoreError(f"kdf_cost {cost!r} for {kdf} ({unit}) must be {lowest}..{highest}")
        if passphrase == "":
            raise KeyStoreError(f"{PASSPHRASE_VARIABLE} is set but empty: unset it or give a passphrase")
        self.directory = os.path.abspath(directory)
        self._passphrase = None if passphrase is None else passphrase.encode("utf-8")
        self._kdf = kdf
        self._kdf_cost = cost
        self._clock = clock
        self._lock = threading.RLock()
        self._keks: dict[str, Kek] = {}
        self._wrapped_with: dict[str, _Kdf] = {}
        self._derived: dict[_Kdf, bytes] = {}
        self._ids: list[str] = []  # sorted, i.e. oldest first
        self._listing: tuple[int, int, int] | None = None
        self._listing_racy = True
        self._make_directory()

    # --- the interface -------------------------------------------------------------------------

    def current(self) -> Kek:
        with self._lock:
            self._refresh()
            if not self._ids:
                return self._create(None)
            return self._load(self._ids[-1])

    def get(self, kek_id: str) -> Kek | None:
        if not isinstance(kek_id, str) or not KEK_ID.match(kek_id):
            return None  # not an id this store makes (and never a path)
        with self._lock:
            kek = self._keks.get(kek_id)
            if kek is not None:
                return kek
            self._stat_directory()
            try:
                return self._load(kek_id)
            except _Missing:
                return None

    def rotate(self) -> Kek:
        with self._lock:
            self._refresh(force=True)  # another process may have rotated: stay after its key
            # Loading the newest first proves the passphrase (and the store's mode) before a
            # new key is written with it.
            newest = self._load(self._ids[-1]) if self._ids else None
            return self._create(newest)

    def list(self) -> list[Kek]:
        with self._lock:
            self._refresh()
            return [self._load(kek_id) for kek_id in self._ids]

    def check(self) -> None:
        """Validate the directory and every key file (fresh from disk); raise one KeyStoreError
        listing every problem, so the server can refuse to start with all of them shown."""
        problems: list[str] = []
        with self._lock:
            st = self._stat()
            problem = self._directory_problem(st)
            if problem is not None:
                problems.append(problem)
            if not stat.S_ISDIR(st.st_mode):
                raise KeyStoreError(problems)
            try:
                ids = self._list_ids()
            except KeyStoreError as error:
                raise KeyStoreError([*problems, str(error)]) from None
            for kek_id in ids:
                try:
                    self._read_kek(kek_id)
                except KeyStoreError as error:
                    problems.append(str(error))
                except _Missing:
                    pass  # removed while we looked
        if problems:
            raise KeyStoreError(problems)

    # --- directory -----------------------------------------------------------------------------

    def _make_directory(self) -> None:
        if os.path.lexists(self.directory):
            return
        try:
            os.makedirs(self.directory, mode=0o700)
            os.chmod(self.directory, 0o700)  # exactly 0700 whatever the umask
        except FileExistsError:
            pass
        except OSError as error:
            raise KeyStoreError(f"cannot create key directory {self.directory}: {error.strerror}") from None

    def _directory_problem(self, st: os.stat_result) -> str | None:
        path = self.directory
        if not stat.S_ISDIR(st.st_mode):
            return f"key directory {path} is not a directory"
        return _access_problem("key directory", path, st, "700")

    def _stat(self) -> os.stat_result:
        try:
            return os.stat(self.directory)
        except OSError as error:
            raise KeyStoreError(f"key directory {self.directory}: {error.strerror}") from None

    def _stat_directory(self) -> os.stat_result:
        st = self._stat()
        problem = self._directory_problem(st)
        if problem is not None:
            raise KeyStoreError(problem)
        return st

    def _list_ids(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except OSError as error:
            raise KeyStoreError(f"cannot list key directory {self.directory}: {error.strerror}") from None
        ids = (name[: -len(SUFFIX)] for name in names if name.endswith(SUFFIX))
        return sorted(kek_id for kek_id in ids if KEK_ID.match(kek_id))

    def _refresh(self, *, force: bool = False) -> None:
        st = self._stat_directory()
        listing = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        if not force and listing == self._listing and not self._listing_racy:
            return
        self._ids = self._list_ids()
        self._listing = listing
        # Filesystem timestamps against the real wall clock (not the injected one).
        self._listing_racy = time.time_ns() - st.st_mtime_ns < _RACY_NS

    def _path(self, kek_id: str) -> str:
        return os.path.join(self.directory, kek_id + SUFFIX)

    # --- reading -------------------------------------------------------------------------------

    def _load(self, kek_id: str) -> Kek:
        kek = self._keks.get(kek_id)
        if kek is None:
            kek = self._read_kek(kek_id)
            self._keks[kek_id] = kek
        return kek

    def _read_kek(self, kek_id: str) -> Kek:
        path = self._path(kek_id)
        document = _read_json(path)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            found = document.get("format") if isinstance(document, dict) else None
            raise KeyStoreError(f"key file {path} has an unknown format {found!r} (expected {FORMAT!r})")
        if document.get("id") != kek_id:
            raise KeyStoreError(
                f"key file {path} holds key {document.get('id')!r}, not {kek_id}: was it renamed?"
            )
        created = document.get("created")
        if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
            raise KeyStoreError(f"key file {path} has no valid creation time")
        created = float(created)
        wrapping = document.get("wrap")
        if wrapping == "none":
            if self._passphrase is not None:
                raise KeyStoreError(
                    f"key {kek_id} in {path} is stored without a passphrase, but {PASSPHRASE_VARIABLE} "
                    f"is set: a key store is either all wrapped or all in clear; unset the variable "
                    f"or use a new key directory"
                )
            key = _b64field(document, "key", path)
        elif wrapping == "aes-256-gcm":
            if self._passphrase is None:
                raise KeyStoreError(
                    f"key {kek_id} in {path} is wrapped with a passphrase: set {PASSPHRASE_VARIABLE}"
                )
            kdf = _parse_kdf(document.get("kdf"), path)
            nonce = _b64field(document, "nonce", path)
            if len(nonce) != _NONCE_SIZE:
                raise KeyStoreError(f"key file {path} has a {len(nonce)}-byte nonce, expected {_NONCE_SIZE}")
            wrapped = _b64field(document, "wrapped_key", path)
            try:
                key = AESGCM(self._derive(kdf)).decrypt(nonce, wrapped, _aad(kek_id, created))
            except InvalidTag:
                raise KeyStoreError(
                    f"cannot unwrap key {kek_id} with the given passphrase: wrong "
                    f"{PASSPHRASE_VARIABLE}? (or {path} was altered)"
                ) from None
            self._wrapped_with[kek_id] = kdf
        else:
            raise KeyStoreError(f"key file {path} has an unknown wrapping {wrapping!r}")
        if len(key) != KEY_SIZE:
            raise KeyStoreError(f"key file {path} holds a {len(key)}-byte key, expected {KEY_SIZE}")
        return Kek(kek_id, key, created)

    def _derive(self, kdf: _Kdf) -> bytes:
        derived = self._derived.get(kdf)
        if derived is None:
            assert self._passphrase is not None
            derived = _derive(kdf, self._passphrase)
            self._derived[kdf] = derived
        return derived

    # --- writing -------------------------------------------------------------------------------

    def _create(self, newest: Kek | None) -> Kek:
        kek = new_kek(self._clock, newest)
        document: dict[str, Any] = {"format": FORMAT, "id": kek.kek_id, "created": kek.created}
        if self._passphrase is None:
            document.update(wrap="none", key=_b64encode(kek.key))
        else:
            kdf = self._wrapped_with.get(newest.kek_id) if newest is not None else None
            if kdf is None or (kdf.kdf, kdf.cost) != (self._kdf, self._kdf_cost):
                kdf = _Kdf(self._kdf, self._kdf_cost, secrets.token_bytes(_SALT_SIZE))
            nonce = secrets.token_bytes(_NONCE_SIZE)
            wrapped = AESGCM(self._derive(kdf)).encrypt(nonce, kek.key, _aad(kek.kek_id, kek.created))
            document.update(
                wrap="aes-256-gcm", kdf=kdf.to_json(), nonce=_b64encode(nonce), wrapped_key=_b64encode(wrapped)
            )
            self._wrapped_with[kek.kek_id] = kdf
        self._write(self._path(kek.kek_id), json.dumps(document, indent=2).encode() + b"\n")
        self._keks[kek.kek_id] = kek
        self._ids = sorted({*self._ids, kek.kek_id})
        return kek

    def _write(self, path: str, data: bytes) -> None:
        if os.path.lexists(path):
            raise KeyStoreError(f"key file {path} already exists")  # a 1-in-4096 same-µs clash
        try:
            atomic_write(path, data, mode=0o600)
        except OSError as error:
            raise KeyStoreError(f"cannot write key file {path}: {error.strerror}") from None


# --- helpers -----------------------------------------------------------------------------------


def _access_problem(what: str, path: str, st: os.stat_result, wanted: str) -> str | None:
    euid = os.geteuid()
    if st.st_uid != euid:
        return f"{what} {path} is owned by uid {st.st_uid}, not by uid {euid} that siprecd runs as"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return f"{what} {path} has mode {mode:04o}: group and others must have no access (chmod {wanted} {path})"
    return None


def _read_json(path: str) -> Any:
    try:
        # O_NONBLOCK: a FIFO planted here must not hang the server (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Missing(path) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise KeyStoreError(f"key file {path} is a symbolic link: key files must be regular files") from None
        raise KeyStoreError(f"cannot read key file {path}: {error.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyStoreError(f"key file {path} is not a regular file")
        problem = _access_problem("key file", path, st, "600")
        if problem is not None:
            raise KeyStoreError(problem)
        data = os.read(fd, _MAX_KEY_FILE + 1)
    except OSError as error:
        raise KeyStoreError(f"cannot read key file {path}: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise KeyStoreError(f"key file {path} is too large to be a key file")
    try:
        return json.loads(data)
    except ValueError:  # includes UnicodeDecodeError
        raise KeyStoreError(f"key file {path} is not valid JSON (damaged?)") from None


def _parse_kdf(value: Any, path: str) -> _Kdf:
    if not isinstance(value, dict):
        raise KeyStoreError(f"key file {path} has no key derivation parameters")
    name = value.get("name")
    if name == "scrypt":
        kdf, cost = "scrypt", value.get("log2_n")
        if value.get("r") != _SCRYPT_R or value.get("p") != _SCRYPT_P:
            raise KeyStoreError(f"key file {path}: unsupported scrypt parameters r={value.get('r')!r} p={value.get('p')!r}")
    elif name == _KDF_NAME["pbkdf2"]:
        kdf, cost = "pbkdf2", value.get("iterations")
    else:
        raise KeyStoreError(f"key file {path} names an unknown key derivation {name!r}")
    _, lowest, highest = KDF_COST[kdf]
    if isinstance(cost, bool) or not isinstance(cost, int) or not lowest <= cost <= highest:
        raise KeyStoreError(f"key file {path} has an out-of-range {kdf} cost {cost!r}")
    salt = _b64field(value, "salt", path)
    if not salt:
        raise KeyStoreError(f"key file {path} has an empty salt")
    return _Kdf(kdf, cost, salt)


def _derive(kdf: _Kdf, passphrase: bytes) -> bytes:
    if kdf.kdf == "scrypt":
        return Scrypt(salt=kdf.salt, length=KEY_SIZE, n=2**kdf.cost, r=_SCRYPT_R, p=_SCRYPT_P).derive(passphrase)
    return PBKDF2HMAC(hashes.SHA256(), KEY_SIZE, kdf.salt, kdf.cost).derive(passphrase)


def _aad(kek_id: str, created: float) -> bytes:
    # Binds the wrapped key to its id and creation time: a renamed or re-dated file fails.
    return json.dumps([FORMAT, kek_id, created]).encode()


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64field(document: dict[str, Any], name: str, path: str) -> bytes:
    value = document.get(name)
    if not isinstance(value, str):
        raise KeyStoreError(f"key file {path} has no {name!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyStoreError(f"key file {path} has a damaged {name!r} (not base64)") from None
