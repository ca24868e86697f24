"""A tiny HTTP server for /healthz (alive), /readyz (consuming) and /metrics (Prometheus).

Runs in a daemon thread beside the Faust worker, so probes answer even while a batch is on the GPU.

- ``/healthz``: 200 while the process is alive. With ``stale_after_s`` set, the worker must call
  :meth:`HealthServer.beat` (e.g. once per batch or from a timer on the event loop); when no beat
  came for that long the answer is 503, so a wedged event loop gets the pod restarted.
- ``/readyz``: 200 after :meth:`set_ready` (partitions assigned, model loaded), 503 before and while
  shutting down, so Kubernetes stops routing and KEDA/PDB math sees the pod as not ready.
- ``/metrics``: the default Prometheus registry (``qc_stream.observability.metrics``).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qc_stream.observability.metrics import WORKER_READY


class HealthServer:
    def __init__(self, host: str = "0.0.0.0", port: int = 8000, stale_after_s: float | None = None):
        self.host, self.port = host, port
        self.stale_after_s = stale_after_s
        self.ready = threading.Event()
        self._last_beat = time.monotonic()
        self._httpd: ThreadingHTTPServer | None = None

    def set_ready(self, ready: bool = True) -> None:
        (self.ready.set if ready else self.ready.clear)()
        WORKER_READY.set(1 if ready else 0)

    def beat(self) -> None:
        """Record that the worker's loop is making progress (see ``stale_after_s``)."""
        self._last_beat = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        if self.stale_after_s is None:
            return True, "ok"
        idle = time.monotonic() - self._last_beat
        if idle > self.stale_after_s:
            return False, f"stale: no progress for {idle:.0f}s (limit {self.stale_after_s:.0f}s)"
        return True, "ok"

    def _route(self, path: str) -> tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            ok, why = self.alive()
            return (200 if ok else 503), f"{why}\n".encode(), "text/plain; charset=utf-8"
        if path == "/readyz":
            ok = self.ready.is_set()
            return (
                (200 if ok else 503),
                (b"ready\n" if ok else b"not ready\n"),
                "text/plain; charset=utf-8",
            )
        if path == "/metrics":
            return 200, generate_latest(), CONTENT_TYPE_LATEST
        return 404, b"not found\n", "text/plain; charset=utf-8"

    def start(self) -> HealthServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server naming
                self._send(*server._route(self.path), body=True)

            def do_HEAD(self):  # noqa: N802
                self._send(*server._route(self.path), body=False)

            def _send(self, code: int, payload: bytes, ctype: str, body: bool) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def log_message(self, *args):  # probes every few seconds would flood the log
                pass

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(
            target=self._httpd.serve_forever, name="health-server", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.set_ready(False)
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
