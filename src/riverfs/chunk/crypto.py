"""Volume keys: a random master key, stored only wrapped by a key derived from a passphrase.

At `format --encrypt`, a random 256-bit master key is made and wrapped (AES-256-GCM) with a
key derived from the passphrase by scrypt (parameters and salt recorded beside it, in the
volume settings). Changing the passphrase rewraps the master key; no data is rewritten.

From the master key, HKDF derives what the volume uses:
- the block key (AES-256-GCM, chunk/block.py): each 64 KiB page of a block gets a random
  96-bit nonce and is bound to its object key and page index as associated data;
- the cache-name key (HMAC-SHA256): disk cache file names are keyed hashes of object keys,
  so the cache directory reveals neither paths nor object keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from riverfs.errors import RiverError

CIPHER = "aes-256-gcm"
KDF = "scrypt"
SCRYPT_N = 1 << 15  # ~50-100 ms per unlock: cheap for a mount, costly for guessing
SCRYPT_R = 8
SCRYPT_P = 1
_WRAP_AAD = b"riverfs master key"


class WrongPassphrase(RiverError):
    """The passphrase does not unwrap the volume's master key."""


@dataclass(frozen=True, slots=True)
class VolumeKeys:
    blocks: AESGCM
    cache_names: bytes

    def cache_name(self, object_key: str) -> str:
        return hmac.new(self.cache_names, object_key.encode(), hashlib.sha256).hexdigest()


def new_encryption(passphrase: str) -> tuple[dict, VolumeKeys]:
    """A fresh master key wrapped with `passphrase`: (settings entry, keys)."""
    master = os.urandom(32)
    return _wrap(master, passphrase), _derive(master)


def unlock(entry: dict, passphrase: str) -> VolumeKeys:
    """The volume keys, from the settings entry and the passphrase."""
    return _derive(_unwrap(entry, passphrase))


def rewrap(entry: dict, old: str, new: str) -> dict:
    """The settings entry with the master key wrapped by `new` instead of `old`."""
    return _wrap(_unwrap(entry, old), new)


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        passphrase.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * n * r
    )


def _wrap(master: bytes, passphrase: str) -> dict:
    if not passphrase:
        raise RiverError("an empty passphrase cannot protect a volume; choose one")
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = _kek(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return {
        "cipher": CIPHER,
        "kdf": KDF,
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "wrapped_key": AESGCM(kek).encrypt(nonce, master, _WRAP_AAD).hex(),
    }


def _unwrap(entry: dict, passphrase: str) -> bytes:
    if entry.get("cipher") != CIPHER or entry.get("kdf") != KDF:
        raise RiverError(f"unknown volume encryption {entry.get('cipher')}/{entry.get('kdf')}")
    kek = _kek(passphrase, bytes.fromhex(entry["salt"]), entry["n"], entry["r"], entry["p"])
    try:
        return AESGCM(kek).decrypt(
            bytes.fromhex(entry["nonce"]), bytes.fromhex(entry["wrapped_key"]), _WRAP_AAD
        )
    except InvalidTag:
        raise WrongPassphrase(
            "wrong passphrase for this encrypted volume (set RIVERFS_PASSPHRASE, "
            "use --key-file, or type it at the prompt)"
        ) from None


def _derive(master: bytes) -> VolumeKeys:
    def sub(label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)

    return VolumeKeys(AESGCM(sub(b"riverfs blocks")), sub(b"riverfs cache names"))
