"""Secret keys: generate, save, load, and derive messages and patterns.

A key file is JSON: a format version, the method it was made for, a 256-bit
secret (hex), an optional explicit message, and a SHA-256 checksum over the
rest. Every scheme derives what it needs (message bits, Fourier patterns,
secret directions) from the secret through ``Key.rng(purpose)``, so one file
fully determines the watermark. The secret never appears in ``repr`` or logs;
``fingerprint`` is a short hash that is safe to show.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import ConfigError, KeyFileError

KEY_FORMAT = "wmkit-key"
KEY_VERSION = 1


@dataclass(frozen=True, repr=False)
class Key:
    method: str
    secret: bytes
    message: Optional[tuple[int, ...]] = None
    created: str = ""

    def __repr__(self) -> str:  # never show the secret
        msg = "derived" if self.message is None else f"{len(self.message)} bits given"
        return f"Key(method={self.method!r}, fingerprint={self.fingerprint}, message={msg})"

    __str__ = __repr__

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"fingerprint:" + self.secret).hexdigest()[:12]

    def seed(self, purpose: str) -> int:
        """A 64-bit seed for one purpose; different purposes are independent."""
        digest = hashlib.sha256(self.secret + b"\x00" + purpose.encode()).digest()
        return int.from_bytes(digest[:8], "little")

    def rng(self, purpose: str) -> np.random.Generator:
        return np.random.default_rng(self.seed(purpose))

    def torch_generator(self, purpose: str):
        import torch

        return torch.Generator().manual_seed(self.seed(purpose) & ((1 << 63) - 1))

    def bits(self, num_bits: int, purpose: str = "message") -> np.ndarray:
        """The message: the explicit one (its length must match) or one derived from the secret."""
        if self.message is not None:
            if len(self.message) != num_bits:
                raise KeyFileError(
                    f"this key's message has {len(self.message)} bits but the method expects {num_bits}"
                )
            return np.array(self.message, dtype=np.uint8)
        return self.rng(purpose).integers(0, 2, size=num_bits, dtype=np.uint8)

    def check_method(self, method: str) -> None:
        if self.method != method:
            raise KeyFileError(
                f"this key was made for method '{self.method}', not '{method}'; "
                f"make one with: wmkit keygen -m {method} -o KEY.json"
            )

    def with_message(self, message: Sequence[int]) -> "Key":
        return Key(self.method, self.secret, tuple(int(b) for b in message), self.created)


SECRET_BYTES = 32  # 256-bit secrets


def parse_message(text: str) -> tuple[int, ...]:
    """'0101...' -> (0, 1, 0, 1, ...); anything but 0s and 1s is a ConfigError."""
    text = text.strip()
    if not text or set(text) - {"0", "1"}:
        raise ConfigError(f"a message is a string of 0s and 1s, got {text!r}")
    return tuple(int(c) for c in text)


def generate_key(method: str, *, seed: Optional[int] = None, message: Optional[Sequence[int]] = None) -> Key:
    """A new key. With ``seed`` the secret is reproducible (tests, demos); without, it is random."""
    if seed is None:
        secret = secrets.token_bytes(SECRET_BYTES)
    else:
        secret = hashlib.sha256(f"wmkit-key-seed:{int(seed)}".encode()).digest()
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    msg = None if message is None else tuple(int(b) for b in message)
    return Key(method=method, secret=secret, message=msg, created=created)


def _payload(key: Key) -> dict:
    return {
        "format": KEY_FORMAT,
        "version": KEY_VERSION,
        "method": key.method,
        "secret": key.secret.hex(),
        "message": None if key.message is None else "".join(map(str, key.message)),
        "created": key.created,
    }


def _checksum(payload: dict) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def save_key(key: Key, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: exists; refusing to overwrite a key (pass --overwrite)")
    payload = _payload(key)
    payload["checksum"] = _checksum(payload)
    from .atomic import TargetExists, write_bytes

    try:
        # the key is a secret: readable by its owner only, however it is written (a new file,
        # or over an old one whose mode would otherwise be kept)
        write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode(), overwrite=overwrite, mode=0o600)
    except TargetExists:
        raise ConfigError(f"{path}: exists; refusing to overwrite a key (pass --overwrite)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the key ({exc.strerror or exc})") from None
    return path


def load_key(path: str | os.PathLike, *, method: Optional[str] = None, num_bits: Optional[int] = None) -> Key:
    """Load and verify a key file, whole: format, checksum, a 256-bit secret, a message of 0s
    and 1s; ``method`` checks it was made for that scheme, ``num_bits`` that its message (if it
    has one) is that scheme's length. Every error names the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc})") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        raise KeyFileError(f"{path}: not a wmkit key file (invalid JSON)") from None
    if not isinstance(payload, dict) or payload.get("format") != KEY_FORMAT:
        raise KeyFileError(f"{path}: not a wmkit key file")
    if payload.get("version") != KEY_VERSION:
        raise KeyFileError(f"{path}: key format version {payload.get('version')} is not supported (expected {KEY_VERSION})")
    stored = payload.pop("checksum", None)
    if stored != _checksum(payload):
        raise KeyFileError(f"{path}: the key file is corrupted (checksum mismatch); use an intact copy")
    try:
        secret = bytes.fromhex(payload["secret"])
        if payload["message"] is not None and not isinstance(payload["message"], str):
            raise TypeError("message")
        message = None if payload["message"] is None else parse_message(payload["message"])
        key = Key(method=str(payload["method"]), secret=secret, message=message, created=str(payload["created"]))
    except (KeyError, ValueError, TypeError, AttributeError, ConfigError):
        raise KeyFileError(f"{path}: the key file is malformed (its secret or message is not what wmkit writes)") from None
    if len(secret) != SECRET_BYTES:
        raise KeyFileError(f"{path}: the secret has {8 * len(secret)} bits; wmkit keys have {8 * SECRET_BYTES} "
                           "(make a new key with `wmkit keygen`)")
    if method is not None:
        try:
            key.check_method(method)
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from None
    if num_bits is not None and message is not None and len(message) != num_bits:
        raise KeyFileError(f"{path}: its message has {len(message)} bits; '{key.method}' carries exactly {num_bits}")
    return key
