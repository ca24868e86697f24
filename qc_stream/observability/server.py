"""A tiny HTTP server for /healthz (alive), /readyz (consuming) and /metrics (Prometheus).

Runs in a daemon thread beside the Faust worker, so probes answer even while a batch is on the GPU.

- ``/healthz``: 200 while the process is alive. With ``stale_after_s`` set, the worker must call
  :meth:`HealthServer.beat` (e.g. once per batch or from a timer on the event loop); when no beat
  came for that long the answer is 503, so a wedged event loop gets the pod restarted.
- ``/readyz``: 200 after :meth:`set_ready` (partitions assigned, model loaded) while no problem is
  set; 503 before, while shutting down and while a problem is set (:meth:`set_problem`: e.g. the
  database is unreachable and a batch is being retried), with the reasons in the body, so
  Kubernetes stops routing and KEDA/PDB math sees the pod as not ready.
- A problem given ``stuck_after_s`` turns ``/healthz`` 503 too once it has lasted that long: a
  worker that retries is alive, one that has retried for too long is stuck and is restarted.
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
        self._not_ready_reason = "starting"
        self._problems: dict[str, tuple[str, float, float | None]] = {}
        self._lock = threading.Lock()
        self._last_beat = time.monotonic()
        self._httpd: ThreadingHTTPServer | None = None

    def set_ready(self, ready: bool = True, reason: str = "not ready") -> None:
        """The base readiness (partitions assigned, model loaded); ``reason`` says why not."""
        (self.ready.set if ready else self.ready.clear)()
        if not ready:
            self._not_ready_reason = reason
        self._publish()

    def set_problem(self, key: str, reason: str, stuck_after_s: float | None = None) -> None:
        """Mark a condition that makes the worker not ready (kept until :meth:`clear_problem`);
        setting it again updates the reason and keeps the time it started."""
        with self._lock:
            since = self._problems.get(key, (None, time.monotonic(), None))[1]
            self._problems[key] = (reason, since, stuck_after_s)
        self._publish()

    def clear_problem(self, key: str) -> None:
        with self._lock:
            self._problems.pop(key, None)
        self._publish()

    def problems(self) -> dict[str, str]:
        """key -> "reason (for N s)" of the conditions set now."""
        now = time.monotonic()
        with self._lock:
            return {k: f"{r} (for {now - t:.0f} s)" for k, (r, t, _) in self._problems.items()}

    def readiness(self) -> tuple[bool, str]:
        reasons = [f"{k}: {r}" for k, r in self.problems().items()]
        if not self.ready.is_set():
            reasons.insert(0, self._not_ready_reason)
        return (not reasons), ("ready" if not reasons else "not ready: " + "; ".join(reasons))

    def _publish(self) -> None:
        WORKER_READY.set(1 if self.readiness()[0] else 0)

    def beat(self) -> None:
        """Record that the worker's loop is making progress (see ``stale_after_s``)."""
        self._last_beat = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        now = time.monotonic()
        with self._lock:
            stuck = [
                f"stuck: {k}: {r} for {now - t:.0f}s (limit {limit:.0f}s)"
                for k, (r, t, limit) in self._problems.items()
                if limit is not None and now - t > limit
            ]
        if stuck:
            return False, "; ".join(stuck)
        if self.stale_after_s is None:
            return True, "ok"
        idle = now - self._last_beat
        if idle > self.stale_after_s:
            return False, f"stale: no progress for {idle:.0f}s (limit {self.stale_after_s:.0f}s)"
        return True, "ok"

    def _route(self, path: str) -> tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            ok, why = self.alive()
            return (200 if ok else 503), f"{why}\n".encode(), "text/plain; charset=utf-8"
        if path == "/readyz":
            ok, why = self.readiness()
            return (200 if ok else 503), f"{why}\n".encode(), "text/plain; charset=utf-8"
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
        self.set_ready(False, "shutting down")
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
