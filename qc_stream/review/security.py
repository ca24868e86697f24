"""Sessions, CSRF tokens, one-time form tokens and the login rate limit of the review station.

The session is a signed cookie (itsdangerous, via Starlette's SessionMiddleware) holding the user
name and a CSRF token; every POST must carry that token. A decision form also carries a one-time
token (signed: frame id, user, nonce, time): a replayed post is refused, as is one older than
``FORM_MAX_AGE_S``. Used tokens are remembered in this process until they expire (one replica;
several replicas behind a load balancer need sticky sessions for this check).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

FORM_MAX_AGE_S = 3600


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class FormTokens:
    def __init__(self, secret: str):
        self._signer = URLSafeTimedSerializer(secret, salt="qc-review-form")
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, frame_id: str, user: str) -> str:
        return self._signer.dumps([frame_id, user, secrets.token_hex(8)])

    def consume(self, token: str, frame_id: str, user: str) -> str | None:
        """None when the token is good (and now used), else why it is refused."""
        try:
            fid, who, _ = self._signer.loads(token or "", max_age=FORM_MAX_AGE_S)
        except SignatureExpired:
            return "this form has expired; reload the page"
        except (BadSignature, ValueError, TypeError):
            return "this form was not issued by the review station"
        if fid != frame_id or who != user:
            return "this form was issued for another frame or user"
        now = time.monotonic()
        with self._lock:
            for t, at in list(self._used.items()):
                if now - at > FORM_MAX_AGE_S:
                    del self._used[t]
            if token in self._used:
                return "this form was already submitted"
            self._used[token] = now
        return None


class LoginLimiter:
    """At most ``attempts`` failed logins per (user name, client address) per ``window_s``."""

    def __init__(self, attempts: int, window_s: float = 60.0):
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked(self, user: str, client: str) -> bool:
        with self._lock:
            return len(self._recent((user, client), time.monotonic())) >= self.attempts

    def failed(self, user: str, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent((user, client), now).append(now)

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            self._failures.pop((user, client), None)
