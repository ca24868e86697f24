"""The worker's liveness heartbeat: one beat proves both the event loop and the inference thread.

A timer on the event loop calls :meth:`InferenceHeartbeat.tick`; the tick queues a no-op beat on the
inference thread (one at a time). The health server's clock advances only when that beat runs, so
``/healthz`` turns 503 after ``QC_HEALTH_STALE_S`` when either is wedged: a blocked event loop
stops ticking, a hung GPU call never reaches the queued beat.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future


class InferenceHeartbeat:
    def __init__(self, health, inference_pool: Executor):
        self.health = health
        self.pool = inference_pool
        self._pending: Future | None = None

    def tick(self) -> None:
        """Called from the event loop; never blocks on the inference thread."""
        if self._pending is not None and not self._pending.done():
            return  # the last beat still waits behind a batch (or a hang): don't pile up
        self._pending = self.pool.submit(self.health.beat)
