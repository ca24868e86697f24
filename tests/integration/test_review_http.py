"""The review station over HTTP (FastAPI's TestClient, real Postgres, a real frame store folder):
auth, CSRF, roles, and bad input - forged and replayed posts, unknown/malformed/../ frame ids, HTML
in defect names, two reviewers deciding one frame at once, the frame store gone."""

from __future__ import annotations

import re
import shutil
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from qc_stream.registry.service import DefectRegistry
from qc_stream.review.app import create_app
from qc_stream.review.export import export_reviewed
from qc_stream.settings import load_settings
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.frame_store import FrameStore
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.orm import DefectProposalRow, RetainedFrameRow, ReviewRow
from qc_stream.storage.reviews import ReviewRepository
from tests.support.review import FORM_TOKEN, PASSWORD, add_user, csrf_of, keep_frames, login


class Station:
    def __init__(self, engine, store: FrameStore, frames: list[str], app):
        self.engine, self.store, self.frames, self.app = engine, store, frames, app

    def client(self) -> TestClient:
        return TestClient(self.app)

    def rows(self) -> list[ReviewRow]:
        with self.engine.connect() as c:
            return [ReviewRow(**r._mapping) for r in c.execute(select(ReviewRow.__table__))]


@pytest.fixture
def station(pg_url, tmp_path) -> Station:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    store = FrameStore(tmp_path / "frames")
    store.root.mkdir()
    registry = DefectRegistry(DefectTypeRepository(engine))
    registry.add("pill", "crack")
    registry.add("pill", "stain")
    frames = keep_frames(
        engine, store, [("f-3", "reject", "crack"), ("f-2", "warn", "crack"), ("f-1", "ok", None)]
    )
    add_user(engine, "olga", "operator")
    add_user(engine, "emil", "engineer")
    settings = load_settings(
        database_url=pg_url,
        frame_store_dir=tmp_path / "frames",
        review_secret="test-secret-0123456789",
        review_login_attempts=3,
        redis_url="off",
    )
    app = create_app(
        settings,
        engine=engine,
        registry_factory=lambda: DefectRegistry(DefectTypeRepository(engine)),
    )
    return Station(engine, store, frames, app)


def item_form(client, frame_id: str) -> tuple[str, str]:
    page = client.get(f"/frames/{frame_id}")
    assert page.status_code == 200, page.text
    return csrf_of(page.text), FORM_TOKEN.search(page.text).group(1)


def decide(client, frame_id: str, **fields):
    csrf, token = item_form(client, frame_id)
    data = {"csrf": csrf, "form_token": token, **fields}
    return client.post(f"/frames/{frame_id}/decide", data=data, follow_redirects=False)


# --- auth ---
def test_queue_needs_a_session_and_posts_need_a_login(station):
    c = station.client()
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.get("/frames/f-3/image", follow_redirects=False).status_code == 303
    csrf = csrf_of(c.get("/login").text)
    r = c.post("/frames/f-3/decide", data={"csrf": csrf, "action": "confirm"})
    assert r.status_code == 401
    assert station.rows() == []


def test_login_logout_and_wrong_passwords_are_rate_limited(station):
    c = station.client()
    assert login(c, "olga", "wrong password").status_code == 401
    r = login(c, "olga")
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = c.get("/")
    assert page.status_code == 200 and 'id="queue-size">3<' in page.text
    assert "f-3" in page.text and page.text.index("f-3") < page.text.index("f-1")  # newest first
    c.post("/logout", data={"csrf": csrf_of(page.text)})
    assert c.get("/", follow_redirects=False).status_code == 303

    other = station.client()
    for _ in range(3):
        assert login(other, "emil", "nope nope nope").status_code == 401
    blocked = login(other, "emil")  # the right password, but too many failures just now
    assert blocked.status_code == 429 and "Too many failed logins" in blocked.text
    assert login(station.client(), "olga").status_code == 303  # another user is not blocked


def test_disabled_user_loses_the_session(station):
    from qc_stream.storage.reviews import UserRepository

    c = station.client()
    login(c, "olga")
    assert c.get("/").status_code == 200
    UserRepository(station.engine).set("olga", disabled=True)
    assert c.get("/", follow_redirects=False).status_code == 303
    assert login(station.client(), "olga").status_code == 401


# --- decisions ---
def test_confirm_override_verdict_override_type_append_rows(station):
    c = station.client()
    login(c, "olga")
    r = decide(c, "f-3", action="confirm")
    assert r.status_code == 303 and r.headers["location"] == "/frames/f-2"  # next unreviewed
    page = c.get("/frames/f-2").text
    assert "warn 0.5, reject 0.8 (global)" in page and "v-test" in page
    assert decide(c, "f-2", action="verdict", verdict="ok").status_code == 303
    assert decide(c, "f-1", action="type", defect_type="stain").status_code == 303
    rows = {r.frame_id: r for r in station.rows()}
    assert (rows["f-3"].verdict, rows["f-3"].defect_type, rows["f-3"].agrees) == (
        "reject",
        "crack",
        True,
    )
    assert (rows["f-2"].original_verdict, rows["f-2"].verdict, rows["f-2"].agrees) == (
        "warn",
        "ok",
        False,
    )
    assert (rows["f-1"].verdict, rows["f-1"].defect_type, rows["f-1"].agrees) == (
        "reject",
        "stain",
        False,
    )
    assert {r.reviewer for r in rows.values()} == {"olga"}
    assert all(r.prompt_version == "v-test" for r in rows.values())
    assert 'id="queue-size">0<' in c.get("/").text


def test_forged_and_replayed_posts_are_refused_and_write_nothing(station):
    c = station.client()
    login(c, "olga")
    csrf, token = item_form(c, "f-3")
    bad_csrf = c.post(
        "/frames/f-3/decide", data={"csrf": "forged", "form_token": token, "action": "confirm"}
    )
    assert bad_csrf.status_code == 403
    forged = c.post(
        "/frames/f-3/decide", data={"csrf": csrf, "form_token": "x.y.z", "action": "confirm"}
    )
    assert forged.status_code == 409 and "not issued" in forged.text
    other_frame = c.post(
        "/frames/f-2/decide", data={"csrf": csrf, "form_token": token, "action": "confirm"}
    )
    assert other_frame.status_code == 409 and "another frame" in other_frame.text
    assert station.rows() == []
    data = {"csrf": csrf, "form_token": token, "action": "confirm"}
    assert c.post("/frames/f-3/decide", data=data, follow_redirects=False).status_code == 303
    replay = c.post("/frames/f-3/decide", data=data, follow_redirects=False)
    assert replay.status_code == 409 and "already submitted" in replay.text
    assert len(station.rows()) == 1
    # Bad values in a genuine form: a clear 400, nothing written.
    assert decide(c, "f-2", action="verdict", verdict="maybe").status_code == 400
    assert decide(c, "f-2", action="explode").status_code == 400
    assert decide(c, "f-2", action="type", defect_type="not-registered").status_code == 400
    assert len(station.rows()) == 1


def test_two_reviewers_at_once_last_wins_both_kept(station):
    a, b = station.client(), station.client()
    login(a, "olga")
    login(b, "emil")
    forms = {"olga": (a, *item_form(a, "f-3")), "emil": (b, *item_form(b, "f-3"))}
    verdicts = {"olga": "ok", "emil": "warn"}
    statuses = []
    go = threading.Barrier(2)

    def post(who):
        client, csrf, token = forms[who]
        data = {"csrf": csrf, "form_token": token, "action": "verdict", "verdict": verdicts[who]}
        go.wait()
        statuses.append(
            client.post("/frames/f-3/decide", data=data, follow_redirects=False).status_code
        )

    threads = [threading.Thread(target=post, args=(w,)) for w in forms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [303, 303]
    rows = sorted(station.rows(), key=lambda r: r.id)
    assert [r.reviewer for r in rows] in (["olga", "emil"], ["emil", "olga"])
    detail = ReviewRepository(station.engine).detail("f-3")
    assert detail.current.id == rows[-1].id and detail.current.verdict == rows[-1].verdict
    assert "2 decisions kept" in a.get("/frames/f-3").text


# --- bad ids, paths, HTML ---
@pytest.mark.parametrize(
    "path",
    [
        "/frames/unknown-frame",
        "/frames/%2e%2e",
        "/frames/a..b",
        "/frames/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/frames/%3Cscript%3E",
        "/frames/" + "x" * 300,
        "/frames/..%2Fsecret/image",
        "/frames/unknown-frame/overlay",
    ],
)
def test_unknown_malformed_and_traversing_ids_are_404(station, path):
    c = station.client()
    login(c, "olga")
    r = c.get(path, follow_redirects=False)
    assert r.status_code == 404
    assert "<script>" not in r.text


def test_a_stored_path_leaving_the_store_is_refused(station, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    with station.engine.begin() as conn:
        conn.execute(
            RetainedFrameRow.__table__.update()
            .where(RetainedFrameRow.frame_id == "f-2")
            .values(path="../secret.txt", overlay_path="/etc/passwd")
        )
    c = station.client()
    login(c, "olga")
    for what in ("image", "overlay"):
        r = c.get(f"/frames/f-2/{what}")
        assert r.status_code == 404 and "outside the frame store" in r.text
        assert "do not serve" not in r.text and "root:" not in r.text


def test_html_in_defect_names_is_escaped_everywhere(station):
    evil = "<script>alert(1)</script>"
    with station.engine.begin() as conn:  # a registered type as odd as the registry allows
        conn.execute(
            insert(DefectProposalRow.__table__.metadata.tables["defect_types"]).values(
                product="pill",
                name='<img src=x onerror="alert(2)">',
                name_key='<img src=x onerror="alert(2)">',
                description="<b>bold</b>",
                status="active",
            )
        )
    c = station.client()
    login(c, "olga")
    page = c.get("/frames/f-3").text
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page
    assert decide(c, "f-3", action="type", new_type=evil).status_code == 303
    rows = station.rows()
    assert rows[-1].defect_type == evil
    with station.engine.connect() as conn:
        proposal = conn.execute(select(DefectProposalRow.__table__)).one()
    assert proposal.name == evil and proposal.status == "pending"

    e = station.client()
    login(e, "emil")
    proposals = e.get("/proposals").text
    assert evil not in proposals and "&lt;script&gt;alert(1)&lt;/script&gt;" in proposals
    assert "&lt;script&gt;" in e.get("/frames/f-3").text  # the current decision, escaped


# --- roles and proposals ---
def test_only_engineers_accept_proposed_types(station):
    c = station.client()
    login(c, "olga")
    assert decide(c, "f-1", action="type", new_type="Scratch").status_code == 303
    pid = ReviewRepository(station.engine).proposals()[0].id
    assert c.get("/proposals").status_code == 403
    csrf = csrf_of(c.get("/").text)
    assert c.post(f"/proposals/{pid}/accept", data={"csrf": csrf}).status_code == 403

    e = station.client()
    login(e, "emil")
    page = e.get("/proposals")
    assert page.status_code == 200 and "Scratch" in page.text
    csrf = csrf_of(page.text)
    assert e.post(f"/proposals/{pid}/accept", data={"csrf": "forged"}).status_code == 403
    r = e.post(f"/proposals/{pid}/accept", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert "Scratch" in [d.name for d in DefectTypeRepository(station.engine).list("pill")]
    assert ReviewRepository(station.engine).proposals() == []
    again = e.post(f"/proposals/{pid}/accept", data={"csrf": csrf})
    assert again.status_code == 404
    assert e.post("/proposals/abc/accept", data={"csrf": csrf}).status_code == 404


# --- the frame store gone ---
def test_frame_store_gone_shows_a_message_and_decisions_still_work(station):
    shutil.rmtree(station.store.root)
    c = station.client()
    login(c, "olga")
    page = c.get("/frames/f-3")
    assert page.status_code == 200 and 'id="store-problem"' in page.text
    assert "no longer in the frame store" in page.text
    r = c.get("/frames/f-3/image")
    assert r.status_code == 404 and "no longer in the frame store" in r.text
    assert decide(c, "f-3", action="confirm").status_code == 303
    assert len(station.rows()) == 1


# --- export ---
def test_export_writes_the_retrain_examples_layout(station, tmp_path):
    c = station.client()
    login(c, "olga")
    decide(c, "f-3", action="confirm")  # reject/crack
    decide(c, "f-2", action="verdict", verdict="ok")  # good
    decide(c, "f-1", action="type", new_type="dent")  # pending type: skipped
    out = tmp_path / "examples"
    report = export_reviewed(
        ReviewRepository(station.engine),
        DefectTypeRepository(station.engine).list(),
        station.store,
        out,
    )
    files = sorted(p.relative_to(out).parts[:2] for p in out.rglob("*.png"))
    assert files == [("pill", "crack"), ("pill", "good")]
    assert dict(report.skipped) == {"type 'dent' not registered": 1}

    from qc_stream.registry.examples import load_examples

    examples = load_examples(out, DefectTypeRepository(station.engine).list())
    assert sorted((e.product, e.defect_type or "") for e in examples) == [
        ("pill", ""),
        ("pill", "crack"),
    ]


def test_engineers_download_the_export_as_a_zip(station):
    import io
    import zipfile

    c = station.client()
    login(c, "olga")
    decide(c, "f-3", action="confirm")
    decide(c, "f-2", action="verdict", verdict="ok")
    assert c.get("/export.zip").status_code == 403
    e = station.client()
    login(e, "emil")
    r = e.get("/export.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert sorted(n.split("/")[:2] for n in names if n.endswith(".png")) == [
        ["pill", "crack"],
        ["pill", "good"],
    ]


def test_security_headers_and_no_api_docs(station):
    c = station.client()
    r = c.get("/login")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert c.get("/docs").status_code == 404 and c.get("/openapi.json").status_code == 404
    assert c.get("/readyz").status_code == 200
    assert re.search(r'name="csrf" value="[^"]{20,}"', r.text)
    assert PASSWORD not in r.text
