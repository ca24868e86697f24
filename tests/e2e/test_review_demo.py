"""A new user's path: `qc-stream demo` prints how to log in to the review station; with that user
and password the station (on the demo's SQLite database and frames folder) lists the kept frames
and takes a decision."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from qc_stream.review.app import create_app
from qc_stream.settings import load_settings
from tests.support.review import FORM_TOKEN, csrf_of

TINY = {"QC_BACKBONE": "qc-test-tiny", "QC_DEVICE": "cpu", "QC_REDIS_URL": "off"}


pytestmark = pytest.mark.usefixtures("untrained_models")


def test_demo_prints_a_login_that_works_on_the_review_station(tmp_path):
    out = tmp_path / "demo-out"
    env = {k: v for k, v in os.environ.items() if k != "QC_DATABASE_URL"} | TINY
    r = subprocess.run(
        [sys.executable, "-c", "from qc_stream.cli.main import run; run()", "demo"]
        + ["--frames", "8", "--cameras", "1", "--fps", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "qc-stream review --port 8090" in r.stdout
    assert "http://127.0.0.1:8090/login" in r.stdout
    m = re.search(r"user 'demo', password '([^']+)' \(made for this demo database only", r.stdout)
    assert m, r.stdout
    db_url = f"sqlite:///{out / 'demo.db'}"
    with create_engine(db_url).connect() as c:
        kept = c.execute(text("select count(*) from retained_frames")).scalar()
        flagged = c.execute(text("select count(*) from inspections where verdict <> 'ok'")).scalar()
    assert kept >= flagged and kept >= 1

    app = create_app(
        load_settings(database_url=db_url, frame_store_dir=out / "frames", redis_url="off")
    )
    client = TestClient(app)
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "name": "demo", "password": m.group(1)})
    assert r.status_code == 200 and f'id="queue-size">{kept}<' in r.text
    frame_id = re.search(r'href="/frames/([^"?]+)', r.text).group(1)
    page = client.get(f"/frames/{frame_id}")
    assert client.get(f"/frames/{frame_id}/image").status_code == 200
    data = {
        "csrf": csrf_of(page.text),
        "form_token": FORM_TOKEN.search(page.text).group(1),
        "action": "confirm",
    }
    assert client.post(f"/frames/{frame_id}/decide", data=data).status_code == 200
    with create_engine(db_url).connect() as c:
        assert c.execute(text("select reviewer from reviews")).scalars().all() == ["demo"]
