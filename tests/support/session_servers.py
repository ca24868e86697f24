"""The Postgres and Redis a test session uses: the given ones when reachable, else throwaway ones.

``QC_TEST_PG_ADMIN_URL`` / ``QC_TEST_REDIS_URL`` name the servers to use (defaults: the CI image's
Postgres on 5432, database ``test``, and Redis database 15 on 6379). A server that does not accept a
TCP connection is replaced, for this session only, by a private one from ``tests.support.servers``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.support.servers import (
    PostgresServer,
    RedisServer,
    ServerStartError,
    port_accepts,
    postgres_bin_dirs,
    private_postgres,
    private_redis,
)

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
_PROBE_TIMEOUT_S = 1.0


@dataclass
class SessionServer:
    """One service of the session: where it is and, for a throwaway, the server behind it."""

    kind: str
    given_url: str
    url: str
    server: PostgresServer | RedisServer | None = None
    start_s: float | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.server is None and self.error is None:
            return f"{self.kind}: {self.url} (given, reachable)"
        if self.server is None:
            return (
                f"{self.kind}: {self.given_url} unreachable and no throwaway server: {self.error}"
            )
        binary = getattr(self.server, "bin_dir", None) or getattr(self.server, "binary", None)
        return (
            f"{self.kind}: throwaway {self.url} ({self.given_url} unreachable); "
            f"started in {self.start_s:.2f} s from {binary}, pid {self.server.pid}, "
            f"dir {self.server.root_dir}"
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    if not parts.hostname:
        return True  # a Unix socket or an odd URL: not ours to second-guess
    return port_accepts(parts.hostname, parts.port or default_port, timeout=_PROBE_TIMEOUT_S)


def _for_session(kind: str, given_url: str, default_port: int, start, url_of) -> SessionServer:
    if reachable(given_url, default_port):
        return SessionServer(kind, given_url, given_url)
    t0 = time.monotonic()
    try:
        server = start()
    except ServerStartError as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        return SessionServer(kind, given_url, given_url, error=first_line)
    return SessionServer(kind, given_url, url_of(server), server, time.monotonic() - t0)


def postgres_for_session(given_url: str) -> SessionServer:
    return _for_session("Postgres", given_url, 5432, private_postgres, lambda s: s.admin_url)


def redis_for_session(given_url: str) -> SessionServer:
    return _for_session("Redis", given_url, 6379, private_redis, lambda s: s.url)


def postgres_client_onto_path() -> str | None:
    """Some tests run ``psql``: where it is not on PATH, append the one beside the server binaries.

    Returns the directory added, or None when nothing was needed (or none was found).
    """
    if shutil.which("psql"):
        return None
    for bin_dir in postgres_bin_dirs():
        if (bin_dir / "psql").is_file():
            os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + str(bin_dir)
            return str(bin_dir)
    return None
