"""Helpers for the review station tests: a migrated database with kept frames, users, logins."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from PIL import Image

from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.review.passwords import hash_password
from qc_stream.storage.frame_store import FrameStore
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.storage.reviews import ReviewRepository, UserRepository

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


def png(color=(120, 120, 120), size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def keep_frames(engine, store: FrameStore, specs, data: bytes | None = None) -> list[str]:
    """Inspections + kept frames for ``specs`` = [(frame_id, verdict, defect_type), ...]; the
    first spec is the newest."""
    now = datetime.now(UTC)
    results = []
    for n, (frame_id, verdict, defect_type) in enumerate(specs):
        results.append(
            InspectionResult(
                frame_id=frame_id,
                camera_id="cam-1",
                line_id="line-1",
                product="pill",
                captured_at=now - timedelta(seconds=n),
                verdict=Verdict(verdict),
                anomaly_score={"ok": 0.1, "warn": 0.6, "reject": 0.9}[verdict],
                defect_type=defect_type,
                model_version="qc-test-tiny@x",
                prompt_version="v-test",
                latency_ms=5.0,
            )
        )
    InspectionRepository(engine).record_many(results)
    stored = [
        replace(
            store.put(
                r.frame_id,
                r.captured_at,
                data or png(),
                "image/png",
                lambda p: Image.new("RGB", (32, 32), (200, 0, 0)).save(p, format="PNG"),
            ),
            thresholds={"warn": 0.5, "reject": 0.8, "source": "global"},
        )
        for r in results
    ]
    ReviewRepository(engine).record_retained(stored)
    return [r.frame_id for r in results]


def add_user(engine, name: str, role: str = "operator") -> None:
    UserRepository(engine).add(name, hash_password(PASSWORD), role)


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def login(client, name: str, password: str = PASSWORD):
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"csrf": token, "name": name, "password": password},
        follow_redirects=False,
    )
