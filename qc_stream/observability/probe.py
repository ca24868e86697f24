"""Container health check: ``python -m qc_stream.observability.probe [/healthz|/readyz]``.

Used by the Dockerfiles' HEALTHCHECK (images carry no curl). Asks the HealthServer on
127.0.0.1:$QC_HEALTH_PORT and exits 0 on HTTP 200, 1 otherwise, printing one line either way.
Standard library only: a probe must not pay torch's import time every few seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe(
    path: str = "/healthz", port: int | None = None, host: str = "127.0.0.1", timeout_s: float = 3.0
) -> tuple[bool, str]:
    """Return (healthy, one-line description) for GET http://host:port/path."""
    if port is None:
        port = int(os.environ.get("QC_HEALTH_PORT", "8000"))
    if port <= 0:
        # -1 disables the server (and 0 means a random port nobody can probe): nothing to check.
        return True, f"health server disabled (QC_HEALTH_PORT={port})"
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as e:
        return False, f"{url}: {e.code}"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return False, f"{url}: unreachable ({reason})"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "/healthz"
    healthy, line = probe(path)
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
