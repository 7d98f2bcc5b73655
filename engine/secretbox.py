"""Encryption at rest of credential secrets: Fernet (AES-128-CBC + HMAC-SHA256, `cryptography`) with key rotation.

Keys come from `EZ_SECRET_KEY` (comma-separated, the first encrypts, every one decrypts) or, when that is
unset, from `<data>/secret.key`: one key per line, newest first, created with mode 0600 on first use.
A process re-reads the key file when it changes (`ezstats credentials rotate-key` adds a key to it), so
every process of a data dir keeps decrypting what the others write.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from engine.errors import InvalidParameter, SecretKeyError

KEY_FILE = "secret.key"
#: Passphrases are stretched with scrypt into a Fernet key; the salt is fixed so every process derives the same.
_SALT = b"ezstats-credentials-v1"
MIN_PASSPHRASE = 16


def new_key() -> str:
    """A fresh random Fernet key (urlsafe base64 of 32 bytes), for EZ_SECRET_KEY or the key file."""
    return Fernet.generate_key().decode()


def parse_keys(text: str) -> list[bytes]:
    """Fernet keys of a comma- or newline-separated list: Fernet keys as they are, passphrases stretched.

    Raises:
        InvalidParameter: an empty list, or a passphrase shorter than 16 characters (the key is never echoed).
    """
    keys = []
    for position, item in enumerate(p.strip() for p in text.replace("\n", ",").split(",")):
        if not item:
            continue
        if _is_fernet_key(item):
            keys.append(item.encode())
        elif len(item) >= MIN_PASSPHRASE:
            raw = hashlib.scrypt(item.encode(), salt=_SALT, n=2**14, r=8, p=1, dklen=32)
            keys.append(base64.urlsafe_b64encode(raw))
        else:
            raise InvalidParameter(f"secret key #{position + 1} is neither a Fernet key nor a passphrase of "
                                   f"{MIN_PASSPHRASE}+ characters")
    if not keys:
        raise InvalidParameter("no secret key given")
    return keys


def _is_fernet_key(text: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(text.encode())) == 32 and len(text) == 44
    except (binascii.Error, ValueError):
        return False


class SecretBox:
    """Encrypts and decrypts secrets with the keys in force; `rotate` re-encrypts with the first key."""

    def __init__(self, keys: list[bytes] | None = None, key_file: Path | None = None) -> None:
        """Fixed `keys` (EZ_SECRET_KEY), or the keys of `key_file`, created when missing."""
        if keys is None and key_file is None:
            raise ValueError("a SecretBox needs keys or a key file")
        self.key_file = key_file if keys is None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: list[bytes] = keys or []
        if self.key_file is not None:
            _create_key_file(self.key_file)
            self._reload()

    @classmethod
    def open(cls, secret_key: str | None, data_dir: Path) -> SecretBox:
        """The box of a data dir: EZ_SECRET_KEY when set, else `<data>/secret.key`."""
        if secret_key:
            return cls(keys=parse_keys(secret_key))
        return cls(key_file=data_dir / KEY_FILE)

    @property
    def source(self) -> str:
        """Where the keys come from, for messages (never the keys)."""
        return str(self.key_file) if self.key_file else "EZ_SECRET_KEY"

    def encrypt(self, secret: str) -> bytes:
        """The secret encrypted with the first key."""
        return self._fernet().encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        """A secret back in clear.

        Raises:
            SecretKeyError: no configured key decrypts it (the key was changed or lost).
        """
        try:
            return self._fernet().decrypt(token).decode()
        except InvalidToken:
            if self.key_file is not None and self._reload():
                try:
                    return self._fernet().decrypt(token).decode()
                except InvalidToken:
                    pass
            raise SecretKeyError(f"a stored credential cannot be decrypted with the keys of {self.source}: "
                                 "restore the key it was written with, or import the credential again") from None

    def rotate(self, token: bytes) -> bytes:
        """The same secret encrypted with the first key (decrypted with whichever key wrote it)."""
        try:
            return self._fernet().rotate(token)
        except InvalidToken:
            raise SecretKeyError(f"a stored credential cannot be decrypted with the keys of {self.source}") from None

    def add_key(self) -> None:
        """Put a new key first in the key file (the old ones stay, to decrypt what they wrote).

        Raises:
            InvalidParameter: the keys come from EZ_SECRET_KEY, which only its owner can change.
        """
        if self.key_file is None:
            raise InvalidParameter("the keys come from EZ_SECRET_KEY: put the new key first in it, restart, then "
                                   "run rotate-key to re-encrypt")
        with self._lock:
            keys = [new_key().encode(), *self._keys]
            _write_key_file(self.key_file, keys, replace=True)
        self._reload()

    def _fernet(self) -> MultiFernet:
        if self.key_file is not None:
            self._reload()
        return MultiFernet([Fernet(k) for k in self._keys])

    def _reload(self) -> bool:
        """Re-read the key file if it changed; whether it did."""
        assert self.key_file is not None
        stat = self.key_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp == self._stamp:
                return False
            self._keys = parse_keys(self.key_file.read_text())
            self._stamp = stamp
            return True


def _create_key_file(path: Path) -> None:
    """Create the key file with one new key, atomically: of processes starting at once, one file wins."""
    if path.exists():
        return
    _write_key_file(path, [new_key().encode()], replace=False)


def _write_key_file(path: Path, keys: list[bytes], replace: bool) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\n".join(keys) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(temp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process created it first: theirs is kept
                os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
