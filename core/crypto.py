"""Secrets at rest: Fernet-encrypted JSON blobs. Plaintext secrets never leave this module's callers' memory."""
from __future__ import annotations

import hashlib
import hmac
import json

from cryptography.fernet import Fernet, InvalidToken


class SecretKeyMissing(RuntimeError):
    pass


def _fernet(secret_key: str) -> Fernet:
    if not secret_key:
        raise SecretKeyMissing("AGENTRUNS_SECRET_KEY is not set; generate one with `agentruns keys gen-secret`")
    return Fernet(secret_key.encode())


def encrypt_json(secret_key: str, value: dict) -> bytes | None:
    """Encrypt a dict; an empty dict stores nothing."""
    if not value:
        return None
    return _fernet(secret_key).encrypt(json.dumps(value, sort_keys=True).encode())


def decrypt_json(secret_key: str, blob: bytes | None) -> dict:
    if not blob:
        return {}
    try:
        return json.loads(_fernet(secret_key).decrypt(bytes(blob)))
    except InvalidToken as exc:  # wrong key: say so without echoing anything
        raise RuntimeError("cannot decrypt a stored secret: AGENTRUNS_SECRET_KEY changed?") from exc


def keyed_hash(secret_key: str, data: bytes) -> str:
    """HMAC-SHA256 so a fingerprint of a payload holding secrets cannot be brute-forced offline."""
    return hmac.new(secret_key.encode() or b"agentruns", data, hashlib.sha256).hexdigest()


def new_secret_key() -> str:
    return Fernet.generate_key().decode()
