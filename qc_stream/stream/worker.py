"""Run a worker: detector + sinks + Faust app + agents + health server, until SIGINT/SIGTERM.

Faust runs programmatically (``faust.Worker``), so no web server is bound; the observability
``HealthServer`` answers /healthz, /readyz (ready once partitions are assigned) and /metrics.
"""

from __future__ import annotations

import logging

from qc_stream.settings import Settings

log = logging.getLogger(__name__)

# How often readiness is matched against the consumer's connection and assignment.
CONSUMER_CHECK_S = 2.0


def build_runtime(settings: Settings):
    """Open the sinks (database, Redis); the detector is loaded later, on the inference thread."""
    from qc_stream.storage.db import is_connection_error, make_engine
    from qc_stream.storage.inspections import InspectionRepository
    from qc_stream.storage.model_versions import ModelVersionRepository
    from qc_stream.stream.runtime import WorkerRuntime, live_updater

    engine = make_engine(settings.database_url)
    repo = InspectionRepository(engine)
    live = None
    if settings.redis_url:
        from qc_stream.storage.cache import Cache

        live = live_updater(Cache(settings.redis_url, settings.cache_prefix, settings.cache_ttl_s))
    retention = None
    if settings.frame_store_dir is not None:
        from qc_stream.storage.frame_store import FrameStore
        from qc_stream.storage.reviews import ReviewRepository
        from qc_stream.stream.retention import FrameRetention

        if not settings.frame_store_dir.is_dir():
            log.warning(
                "frame store %s is missing: frames are inspected but not kept for review",
                settings.frame_store_dir,
            )
        retention = FrameRetention(
            FrameStore(settings.frame_store_dir), ReviewRepository(engine).record_retained
        )
    return WorkerRuntime(
        settings=settings,
        detector=None,
        store=repo.record_many,
        live=live,
        # Connection errors are waited out (batch held); anything else ends the worker.
        is_store_outage=is_connection_error,
        registered_version=ModelVersionRepository(engine).get,
        active_version_row=ModelVersionRepository(engine).active,
        retention=retention,
    )


def _preimport() -> None:
    import qc_stream.dapo.backbone  # noqa: F401  (open_clip)
    import qc_stream.inference.detector  # noqa: F401  (torch, numpy)


def load_detector(rt) -> None:
    """Runs first on the inference thread, so batches queue behind it; overlaps the group join."""
    from qc_stream.inference.detector import Detector
    from qc_stream.observability import metrics
    from qc_stream.stream.prompt_source import choose_prompt_version

    choice = choose_prompt_version(
        rt.settings, active_row=rt.active_version_row, registered=rt.registered_version
    )
    if choice.note:
        log.warning("%s", choice.note)
    rt.detector = Detector.from_settings(rt.settings, version=choice.version, source=choice.source)
    metrics.PROMPT_VERSION.labels(prompt_version=rt.detector.prompt_version).set(1)
    log.warning(
        "detector ready: backbone %s, prompt version %s (from the %s)",
        rt.detector.model_version,
        rt.detector.prompt_version,
        choice.source,
    )


def build_worker_app(settings: Settings, rt, update_offsets: dict[int, int], health=None):
    from qc_stream.stream.agents import inspect, model_updates
    from qc_stream.stream.app import build_app
    from qc_stream.wire.topics import AppTopics

    app = build_app(settings)
    topics = AppTopics(app, settings.topic_partitions)
    inspect.register(app, topics, rt)
    model_updates.register(app, rt, update_offsets)

    @app.task
    async def _quiet_logs() -> None:
        # Installed once Faust has set up logging (it replaces the handlers): a broker or database
        # outage repeats the same library error many times a second; one line per 10 s is enough.
        from qc_stream.observability.ratelimit import quiet_repeats

        quiet_repeats(10.0)

    if health is not None:

        @app.on_partitions_assigned.connect
        async def _ready(sender, assigned, **kwargs) -> None:
            if rt.loaded.done() and rt.loaded.exception() is None:
                health.set_ready(True)
            else:
                rt.loaded.add_done_callback(
                    lambda f: f.exception() is None and health.set_ready(True)
                )

        @app.on_partitions_revoked.connect
        async def _revoked(sender, revoked, **kwargs) -> None:
            health.set_ready(False, "partitions revoked (rebalancing)")

        @app.timer(CONSUMER_CHECK_S)
        async def _consumer_check() -> None:
            # /readyz follows the consumer: connected to the broker, partitions assigned.
            from qc_stream.stream.runtime import consumer_problem

            problem = consumer_problem(app)
            if problem is None:
                health.clear_problem("consumer")
            else:
                health.set_problem("consumer", problem)

        if health.stale_after_s is not None:
            from qc_stream.observability.heartbeat import InferenceHeartbeat

            heartbeat = InferenceHeartbeat(health, rt.inference_pool)

            # Liveness: the loop ticks, the inference thread beats (observability/heartbeat.py).
            @app.timer(min(5.0, health.stale_after_s / 4))
            async def _heartbeat() -> None:
                heartbeat.tick()

    return app


def _exit_if_failed(future) -> None:
    """A detector that cannot load (bad backbone, refused checkpoint) ends the worker with one line."""
    import os
    import sys

    from qc_stream.errors import QcError

    e = future.exception()
    if e is None:
        return
    if isinstance(e, QcError):
        print(f"error: {e}", file=sys.stderr, flush=True)
    else:
        log.error("detector failed to load", exc_info=e)
    os._exit(getattr(e, "exit_code", 1))  # nothing was consumed or committed yet


def _worker_class(faust):
    class Worker(faust.Worker):
        """faust.Worker that exits within ``grace_s`` of SIGTERM/SIGINT whatever state it is in."""

        grace_s: float = 30.0
        rt = None  # the WorkerRuntime: told to stop retrying

        def _on_sigterm(self) -> None:
            self._stopping("SIGTERM", super()._on_sigterm)

        def _on_sigint(self) -> None:
            self._stopping("SIGINT", super()._on_sigint)

        def _on_sigusr1(self) -> None:
            # `kill -USR1 <pid>`: every task of every loop and every thread into the log (mode's
            # own dump shows the main loop only and goes to stderr with all local variables).
            from qc_stream.observability.stackdump import log_stacks

            log_stacks("SIGUSR1")

        def _stopping(self, why: str, stop) -> None:
            # Faust does not wait for unacked events (stream_wait_empty=False, see app.py): the
            # batches in flight are finished here first, a batch held for an outage is not.
            import asyncio

            exit_after(self.grace_s, why)
            if self.rt is None or self.rt.stopping.is_set():
                stop()
                return

            async def drain_then_stop() -> None:
                await self.rt.drain(self.grace_s / 2)
                stop()

            asyncio.ensure_future(drain_then_stop(), loop=self.loop)

    return Worker


def exit_after(grace_s: float, why: str) -> None:
    """A clean stop waits for the batch in flight and leaves the group; with the broker or the
    database down that can hang. After ``grace_s`` the process ends anyway: nothing unacked was
    committed, so the batch is replayed by whoever gets the partition."""
    import os
    import threading
    import time

    def watchdog() -> None:
        time.sleep(grace_s)
        log.warning("%s: clean shutdown did not finish within %.0f s; exiting now", why, grace_s)
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watchdog, name="qc-shutdown-watchdog", daemon=True).start()


def run_worker(settings: Settings, *, loglevel: str | None = None) -> None:
    """Blocks until the worker is stopped (Ctrl-C / SIGTERM); finishes the batch in flight."""
    import faust

    from qc_stream.observability.server import HealthServer
    from qc_stream.stream.agents.model_updates import end_offsets
    from qc_stream.wire.security import kafka_python_kwargs
    from qc_stream.wire.topics import ensure_topics

    rt = build_runtime(settings)
    # The heavy imports start at once on the inference thread, beside the broker calls below and
    # Faust's group join: the first result comes seconds sooner.
    rt.inference_pool.submit(_preimport)
    ensure_topics(
        settings.kafka_bootstrap,
        settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        client_kwargs=kafka_python_kwargs(settings),
    )
    # Noted before the detector loads: an update published while we load is still applied.
    offsets = end_offsets(settings.kafka_bootstrap, kafka_python_kwargs(settings))
    rt.loaded = rt.inference_pool.submit(load_detector, rt)
    rt.loaded.add_done_callback(_exit_if_failed)
    health = lag = None
    if settings.health_port >= 0:
        from qc_stream.observability.lag import LagMonitor

        health = HealthServer(
            port=settings.health_port, stale_after_s=settings.health_stale_s
        ).start()
        lag = LagMonitor.from_settings(settings).start()
        log.warning("health server on :%d (/healthz /readyz /metrics)", health.port)
    rt.health = health
    app = build_worker_app(settings, rt, offsets, health)
    if settings.stall_restart_after_s is not None:
        from qc_stream.stream.runtime import consumer_state, rewind_frames
        from qc_stream.stream.stall import GroupLag, StallWatchdog

        watchdog = StallWatchdog(rt, settings.stall_restart_after_s, GroupLag(settings))
        watchdog.describe = lambda: consumer_state(app)
        watchdog.rewind = lambda offsets: rewind_frames(app, offsets)
        watchdog.start()
    worker = _worker_class(faust)(
        app, loglevel=(loglevel or settings.log_level).lower(), quiet=True
    )
    worker.grace_s, worker.rt = settings.worker_shutdown_grace_s, rt
    worker.spinner = None  # terminal escape codes would litter log files
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        rt.close()
        if lag:
            lag.stop()
        if health:
            health.stop()


if (
    __name__ == "__main__"
):  # `python -m qc_stream.stream.worker`: what the demo, bench and tests spawn
    import sys

    from qc_stream.errors import QcError
    from qc_stream.settings import load_settings

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        run_worker(load_settings())
    except QcError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
