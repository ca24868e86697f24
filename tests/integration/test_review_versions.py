"""The review station's prompt versions page over HTTP (TestClient, real Postgres, a models folder
on the qc-test-tiny backbone, the embedded broker): engineers activate a version through the same
PromptVersions.activate as `qc-stream models activate`; operators, strangers, forged and replayed
posts, unknown versions and versions of another backbone change nothing."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fastapi.testclient import TestClient

from qc_stream.dapo.checkpoint import active_version
from qc_stream.registry.events import MODEL_UPDATES_TOPIC, EventPublisher
from qc_stream.registry.versions import PromptVersions
from qc_stream.review.app import create_app
from qc_stream.settings import SHIPPED_MODELS_DIR, load_settings
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.model_versions import ModelVersionRepository
from tests.integration.test_registry_versions import make_models_dir, seed_version
from tests.support.review import FORM_TOKEN, add_user, csrf_of, login

OTHER_BACKBONE = "dapo-qc-clip-tiny-cpu-v1"  # a shipped version made for qc-clip-tiny-cpu


class Station:
    def __init__(self, engine, settings, app, versions: tuple[str, str]):
        self.engine, self.settings, self.app = engine, settings, app
        self.older, self.newer = versions

    def client(self, user: str | None = None) -> TestClient:
        c = TestClient(self.app)
        if user:
            assert login(c, user).status_code == 303
        return c

    def active(self) -> tuple[str | None, str | None]:
        """The active version as the database and as the models folder's ACTIVE file say."""
        row = ModelVersionRepository(self.engine).active()
        return (row.prompt_version if row else None, active_version(self.settings.models_dir))


def announcements(bootstrap: str) -> list[dict]:
    from qc_stream.devtools.local import read_topic_to_end

    return [json.loads(r.value) for r in read_topic_to_end(bootstrap, MODEL_UPDATES_TOPIC)]


def make_station(pg_url, tmp_path, bootstrap: str, *, default_wiring: bool = False) -> Station:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    models = make_models_dir(tmp_path)
    older = seed_version(models, words=("crack", "scratch"))
    newer = seed_version(models, words=("crack", "scratch", "dent"))  # ACTIVE on disk
    shutil.copytree(
        SHIPPED_MODELS_DIR / "prompts" / OTHER_BACKBONE, models / "prompts" / OTHER_BACKBONE
    )
    add_user(engine, "olga", "operator")
    add_user(engine, "emil", "engineer")
    settings = load_settings(
        database_url=pg_url,
        models_dir=models,
        backbone="qc-test-tiny",
        kafka_bootstrap=bootstrap,
        review_secret="test-secret-0123456789",
        redis_url="off",
    )

    def versions() -> PromptVersions:
        return PromptVersions(
            settings,
            defects=DefectTypeRepository(engine),
            versions=ModelVersionRepository(engine),
            publisher=EventPublisher(bootstrap),
        )

    app = create_app(settings, engine=engine, versions_factory=None if default_wiring else versions)
    return Station(engine, settings, app, (older, newer))


@pytest.fixture
def station(pg_url, tmp_path, broker) -> Station:
    return make_station(pg_url, tmp_path, broker.bootstrap)


def activation_form(client, version: str) -> dict[str, str]:
    """The csrf and one-time token of ``version``'s activate form on /versions."""
    page = client.get("/versions")
    assert page.status_code == 200, page.text
    forms = re.findall(r'<form method="post" action="/versions/activate".*?</form>', page.text)
    form = next(f for f in forms if f'name="version" value="{version}"' in f)
    return {
        "csrf": csrf_of(form),
        "form_token": FORM_TOKEN.search(form).group(1),
        "version": version,
    }


def activate(client, data: dict[str, str]):
    return client.post("/versions/activate", data=data, follow_redirects=False)


def test_engineer_sees_the_versions_and_activates_one_as_the_cli_does(station, broker):
    c = station.client("emil")
    assert 'href="/versions"' in c.get("/").text  # linked from the header
    page = c.get("/versions").text
    for name in (station.older, station.newer, OTHER_BACKBONE):
        assert f'<td class="version">{name}</td>' in page
    assert station.active() == (station.newer, station.newer)
    assert re.search(rf'<tr class="active"><td>\*</td><td class="version">{station.newer}<', page)

    r = activate(c, activation_form(c, station.older))
    assert r.status_code == 303 and r.headers["location"] == "/versions"
    assert station.active() == (station.older, station.older)  # database row and ACTIVE file
    rows = {v.prompt_version: v for v in ModelVersionRepository(station.engine).list()}
    assert rows[station.older].active and not rows[station.newer].active
    last = announcements(broker.bootstrap)[-1]
    assert last["prompt_version"] == station.older
    assert last["backbone_id"] == rows[station.older].backbone
    page = c.get("/versions").text
    assert f"prompt version {station.older} is active; announced on qc.model-updates" in page
    assert re.search(rf'<tr class="active"><td>\*</td><td class="version">{station.older}<', page)
    assert "announced on" not in c.get("/versions").text  # the notice is shown once


def test_operators_get_403_and_strangers_the_login(station):
    form = activation_form(station.client("emil"), station.older)
    olga = station.client("olga")
    assert 'href="/versions"' not in olga.get("/").text
    r = olga.get("/versions")
    assert r.status_code == 403 and "Only engineers activate prompt versions." in r.text
    r = activate(olga, {**form, "csrf": csrf_of(olga.get("/").text)})
    assert r.status_code == 403

    stranger = TestClient(station.app)
    r = stranger.get("/versions", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = activate(stranger, {**form, "csrf": csrf_of(stranger.get("/login").text)})
    assert r.status_code == 401
    assert station.active() == (station.newer, station.newer)


def test_missing_forged_and_replayed_tokens_are_refused(station, broker):
    c = station.client("emil")
    form = activation_form(c, station.older)
    before = len(announcements(broker.bootstrap))
    for bad in ({"csrf": ""}, {"csrf": "forged"}):
        r = activate(c, {**form, **bad})
        assert r.status_code == 403 and "security token is missing or wrong" in r.text
    r = activate(c, {k: v for k, v in form.items() if k != "csrf"})
    assert r.status_code == 403
    for token in ("", "forged." + form["form_token"][7:]):
        r = activate(c, {**form, "form_token": token})
        assert r.status_code == 409 and "Not activated: this form was not issued" in r.text
    # A token issued for another version does not activate this one.
    other = activation_form(c, station.newer)
    r = activate(c, {**form, "form_token": other["form_token"]})
    assert r.status_code == 409 and "issued for another" in r.text
    assert station.active() == (station.newer, station.newer)
    assert len(announcements(broker.bootstrap)) == before

    assert activate(c, form).status_code == 303
    replay = activate(c, form)
    assert replay.status_code == 409 and "already submitted" in replay.text
    assert station.active() == (station.older, station.older)


def test_a_version_of_another_backbone_is_refused_with_the_reason_and_nothing_changes(
    station, broker
):
    c = station.client("emil")
    before = len(announcements(broker.bootstrap))
    r = activate(c, activation_form(c, OTHER_BACKBONE))
    assert r.status_code == 409
    assert re.search(
        rf'id="error">Not activated: prompt version {OTHER_BACKBONE} was made for backbone '
        r"qc-clip-tiny-cpu@\S+, not the running qc-test-tiny@\S+ \(QC_BACKBONE=qc-test-tiny\); "
        "nothing changed<",
        r.text,
    )
    assert f'<td class="version">{OTHER_BACKBONE}</td>' in r.text  # the list is still shown
    assert station.active() == (station.newer, station.newer)
    assert not {v.prompt_version: v for v in ModelVersionRepository(station.engine).list()}[
        OTHER_BACKBONE
    ].active
    assert len(announcements(broker.bootstrap)) == before


@pytest.mark.parametrize("version", ["no-such-version", "", "<script>alert(1)</script>"])
def test_unknown_versions_are_404_and_escaped(station, version):
    c = station.client("emil")
    form = activation_form(c, station.older)
    r = activate(c, {**form, "version": version})
    assert r.status_code == 404 and "No prompt version" in r.text
    assert "<script>alert" not in r.text
    if version.startswith("<"):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert station.active() == (station.newer, station.newer)


def test_without_a_broker_the_version_is_active_and_the_page_says_it_was_not_announced(
    pg_url, tmp_path
):
    """The app's default wiring (PromptVersions.from_settings, as the CLI) with no broker
    listening: the activation stands, and the notice says it was not announced and how to."""
    station = make_station(pg_url, tmp_path, "127.0.0.1:1", default_wiring=True)
    c = station.client("emil")
    assert activate(c, activation_form(c, station.older)).status_code == 303
    assert station.active() == (station.older, station.older)
    page = c.get("/versions").text
    assert (
        f"prompt version {station.older} is active; NOT announced on qc.model-updates "
        "(broker unreachable or publishing off): re-announce with "
        "`qc-stream models activate VERSION`"
    ) in page


def test_a_version_whose_files_this_station_lacks_is_refused_and_nothing_changes(station):
    """The shipped compose/Kubernetes review pod has no models volume: it lists the database's
    versions, and activating one refuses before the database changes."""
    c = station.client("emil")
    form = activation_form(c, station.older)  # listing recorded it in model_versions
    shutil.rmtree(station.settings.models_dir / "prompts" / station.older)
    r = activate(c, form)
    assert r.status_code == 409
    assert f"Not activated: prompt version &#39;{station.older}&#39; not found in " in r.text
    assert f'<td class="version">{station.older}</td>' in r.text  # still listed from the database
    assert station.active() == (station.newer, station.newer)
