"""A whole pipeline on one machine, for the demo, the benchmark and the end-to-end tests.

Embedded broker (or a given one), a migrated database, worker subprocesses (``python -m
qc_stream.stream.worker``, exactly what ``qc-stream worker`` runs), and helpers to wait for rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from qc_stream.errors import QcError


class WorkerProcess:
    """One worker subprocess with its own environment; logs go to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qc_stream.stream.worker"],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to forward, not the worker's
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no hand-over, no commit (what a crash looks like)."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM: finish the batch in flight, commit, leave the group."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def worker_env(
    bootstrap: str,
    database_url: str,
    *,
    app_id: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    **extra,
) -> dict[str, str]:
    env = {
        "QC_KAFKA_BOOTSTRAP": bootstrap,
        "QC_DATABASE_URL": database_url,
        "QC_REDIS_URL": redis_url or "off",
        "QC_APP_ID": app_id or f"qc-local-{uuid.uuid4().hex[:8]}",
        "QC_BROKER_PROFILE": "embedded",
        "QC_HEALTH_PORT": "0",
        "QC_LOG_LEVEL": "WARNING",
    }
    if redis_prefix:
        env["QC_REDIS_PREFIX"] = redis_prefix
    env.update(
        {
            k.upper() if k.startswith("QC_") else f"QC_{k.upper()}": str(v)
            for k, v in extra.items()
            if v is not None
        }
    )
    return env


def wait_for_rows(
    repo,
    n: int,
    timeout_s: float,
    *,
    workers: list[WorkerProcess] = (),
    poll_s: float = 0.2,
    on_poll=None,
) -> int:
    """Poll ``repo.count()`` until it reaches ``n``; QcError with the worker log when it does not."""
    deadline = time.monotonic() + timeout_s
    count = repo.count()
    while count < n:
        if time.monotonic() > deadline:
            tail = "\n".join(w.log_tail() for w in workers)
            raise QcError(
                f"only {count} of {n} frames stored after {timeout_s:.0f} s; worker log:\n{tail}"
            )
        if workers and not any(w.alive for w in workers):
            tail = "\n".join(w.log_tail() for w in workers)
            raise QcError(f"the worker exited ({count} of {n} frames stored); its log:\n{tail}")
        time.sleep(poll_s)
        count = repo.count()
        if on_poll:
            on_poll(count)
    return count


def redis_reachable(url: str | None) -> bool:
    if not url:
        return False
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        ok = bool(client.ping())
        client.close()
        return ok
    except Exception:
        return False


def read_topic(
    bootstrap: str, topic: str, *, expected: int | None = None, timeout_s: float = 10.0
) -> list:
    """Every record of ``topic`` from the beginning (stops at ``expected`` or after ``timeout_s`` idle)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    records = []
    try:
        for r in consumer:
            records.append(r)
            if expected is not None and len(records) >= expected:
                break
    finally:
        consumer.close()
    return records


def read_topic_to_end(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list:
    """Every record of ``topic`` up to its current end, read without a consumer group (assign, seek
    to the beginning, read until each partition reaches the end offset noted at the start).
    Raises TimeoutError after ``timeout_s``: a restarted embedded broker can keep an end offset
    whose records it no longer serves, and the reader must not wait for them for ever."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        known_by = time.monotonic() + min(10.0, timeout_s)
        while not tps and time.monotonic() < known_by:
            # A restarted embedded broker may not know the topic yet: no partitions, no records.
            time.sleep(0.5)
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                behind = {tp.partition: (consumer.position(tp), end[tp]) for tp in tps}
                raise TimeoutError(
                    f"{topic} not readable to its end within {timeout_s:.0f} s "
                    f"(partition: (position, end) {behind})"
                )
            for batch in consumer.poll(timeout_ms=1000).values():
                records += batch
        return records
    finally:
        consumer.close()


def models_dir_without_prompts(target: Path, source: Path | None = None) -> Path:
    """A models folder with the same backbones (linked) and no prompt versions. For tests and the
    benchmark: detectors on it need ``QC_PROMPT_VERSION=untrained`` (random prompts, same cost as
    trained ones); a backbone missing from ``source`` is read from the shipped folder."""
    from qc_stream.settings import SHIPPED_MODELS_DIR

    target.mkdir(parents=True, exist_ok=True)
    link = target / "backbones"
    backbones = Path(source or SHIPPED_MODELS_DIR).resolve() / "backbones"
    if not link.exists() and backbones.is_dir():
        link.symlink_to(backbones, target_is_directory=True)
    return target
