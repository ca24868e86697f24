"""Password hashing for review station accounts (argon2id through argon2-cffi)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from qc_stream.errors import InputError

_HASHER = PasswordHasher()
MIN_LENGTH = 8
# Verified against when the user does not exist, so a login takes as long either way.
_DUMMY = _HASHER.hash("not-a-real-password")


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise InputError(f"a password needs at least {MIN_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
