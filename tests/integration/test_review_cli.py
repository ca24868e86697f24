"""`qc-stream review user add|passwd|disable`, `review cleanup` and `review export` as a user
runs them (subprocesses against real Postgres): one-line errors with exit 2 for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from qc_stream.review.passwords import verify_password
from qc_stream.storage.db import make_engine
from qc_stream.storage.frame_store import FrameStore
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.orm import RetainedFrameRow
from qc_stream.storage.reviews import UserRepository
from tests.support.review import keep_frames

QC_STREAM = Path(sys.executable).with_name("qc-stream")


def qc(env: dict, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(QC_STREAM), "review", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_user_commands(pg_url, tmp_path):
    upgrade(pg_url)
    env = {"QC_DATABASE_URL": pg_url, "QC_REDIS_URL": "off"}
    r = qc(
        env, "user", "add", "ana", "--role", "engineer", "--password-stdin", stdin="s3cret-pass\n"
    )
    assert r.returncode == 0, r.stderr
    again = qc(env, "user", "add", "ana", "--password-stdin", stdin="s3cret-pass\n")
    assert again.returncode == 2 and again.stderr.strip() == (
        "error: user 'ana' exists (qc-stream review user passwd)"
    )
    short = qc(env, "user", "add", "bob", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    role = qc(env, "user", "add", "bob", "--role", "admin", "--password-stdin", stdin="x" * 9)
    assert role.returncode == 2 and "--role must be one of operator, engineer" in role.stderr
    assert "Traceback" not in short.stderr + role.stderr + again.stderr

    users = UserRepository(make_engine(pg_url))
    assert users.get("ana").role == "engineer"
    assert qc(env, "user", "disable", "ana").returncode == 0
    assert users.get("ana").disabled
    r = qc(env, "user", "passwd", "ana", "--password-stdin", stdin="new-password-1\n")
    assert r.returncode == 0
    ana = users.get("ana")
    assert not ana.disabled and verify_password(ana.password_hash, "new-password-1")
    missing = qc(env, "user", "disable", "nobody")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no user 'nobody'"


def test_cleanup_and_export_commands(pg_url, tmp_path):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    store = FrameStore(tmp_path / "frames")
    store.root.mkdir()
    keep_frames(engine, store, [("f-2", "reject", "crack"), ("f-1", "ok", None)], b"x" * 900)
    env = {
        "QC_DATABASE_URL": pg_url,
        "QC_REDIS_URL": "off",
        "QC_FRAME_STORE_DIR": str(store.root),
        "QC_FRAME_STORE_MAX_BYTES": "1024",
    }
    r = qc(env, "cleanup")
    assert r.returncode == 0, r.stderr
    assert "(1 kept frame(s))" in r.stdout  # one frame (+ overlay) had to go to fit 1024 bytes
    with engine.connect() as c:
        assert len(c.execute(select(RetainedFrameRow.frame_id)).all()) == 1
    assert store.usage() <= 1024

    out = tmp_path / "out"
    r = qc(env, "export", "--out", str(out))
    assert r.returncode == 0 and "0 frame(s) written" in r.stdout  # nothing reviewed yet
    without = {k: v for k, v in env.items() if k != "QC_FRAME_STORE_DIR"}
    no_store = qc(without, "export", "--out", str(out))
    assert no_store.returncode == 2 and "QC_FRAME_STORE_DIR" in no_store.stderr
