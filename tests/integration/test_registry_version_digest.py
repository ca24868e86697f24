"""The sha256 of a prompt version's files: recorded at registration, added by migration 0002 (NULL
for older rows) and filled from the files when the registry next syncs with disk. Workers swap only
to versions whose files still match it (tests/unit/test_stream_agents.py)."""

from __future__ import annotations

from sqlalchemy import text

from qc_stream.dapo.checkpoint import version_sha256
from qc_stream.registry.versions import PromptVersions
from qc_stream.settings import load_settings
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.model_versions import ModelVersionRepository
from tests.integration.test_registry_versions import make_models_dir, seed_version


def versions_for(url, models) -> PromptVersions:
    engine = make_engine(url)
    settings = load_settings(
        database_url=url, models_dir=models, backbone="qc-test-tiny", redis_url="off"
    )
    return PromptVersions(
        settings, defects=DefectTypeRepository(engine), versions=ModelVersionRepository(engine)
    )


def test_rows_from_before_0002_get_their_digest_from_the_files_and_new_ones_at_registration(
    pg_url, tmp_path
):
    models = make_models_dir(tmp_path)
    old = seed_version(models)
    migrate.upgrade(pg_url, "0001")
    engine = make_engine(pg_url)
    with engine.begin() as c:  # a version recorded before digests were kept
        c.execute(
            text(
                "INSERT INTO model_versions (prompt_version, backbone, vocabulary, metrics, kind,"
                " active) VALUES (:v, 'qc-test-tiny@x', '{}', '{}', 'trained', true)"
            ),
            {"v": old},
        )
    migrate.upgrade(pg_url, "0002")
    repo = ModelVersionRepository(engine)
    assert repo.get(old).sha256 is None  # what a worker refuses as "no_digest"

    new = seed_version(models, words=("dent",))
    listed = {v.prompt_version: v.sha256 for v in versions_for(pg_url, models).list()}
    folder = models / "prompts"
    assert listed == {old: version_sha256(folder / old), new: version_sha256(folder / new)}
    assert repo.get(old).active  # the backfill changed the digest only

    migrate.downgrade(pg_url, "0001")  # reversible
    with engine.connect() as c:
        assert "sha256" not in c.execute(text("SELECT * FROM model_versions")).keys()
