"""`qc-stream broker` never leaves its tansu child behind: SIGTERM and SIGINT are forwarded (the
port is free and no broker process remains), and a SIGKILLed command takes tansu with it (Linux
parent-death signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qc_stream.devtools.broker import free_port, port_open

QC = str(Path(sys.executable).with_name("qc-stream"))


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_broker_cli(port: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [QC, "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # "broker ready on ..." once the topics exist
    assert line.startswith("broker ready on 127.0.0.1:"), line + proc.stderr.read()
    [tansu] = children(proc.pid)
    assert port_open("127.0.0.1", port)
    return proc, tansu


def wait_gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_broker_command_stops_tansu_and_frees_the_port(sig):
    port = free_port()
    proc, tansu = start_broker_cli(port)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"{sig.name}: stopping the broker" in err and "broker stopped" in out
    assert wait_gone(tansu), f"tansu (pid {tansu}) outlived `qc-stream broker`"
    assert not port_open("127.0.0.1", port)


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
def test_sigkill_of_the_broker_command_takes_tansu_with_it():
    port = free_port()
    proc, tansu = start_broker_cli(port)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert wait_gone(tansu), f"tansu (pid {tansu}) outlived a SIGKILLed `qc-stream broker`"
    deadline = time.monotonic() + 5
    while port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_open("127.0.0.1", port)
