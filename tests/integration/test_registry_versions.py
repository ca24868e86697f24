"""Prompt versions on Postgres + files (qc-test-tiny backbone) + the embedded broker."""

import json
import uuid

import pytest

from qc_stream.errors import QcError
from qc_stream.registry.events import MODEL_UPDATES_TOPIC, EventPublisher
from qc_stream.registry.service import DefectRegistry
from qc_stream.registry.versions import PromptVersions
from qc_stream.settings import SHIPPED_MODELS_DIR, load_settings
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.model_versions import ModelVersionRepository


def make_models_dir(tmp_path):
    """A models/ folder of our own that sees the repository's backbones."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "backbones").symlink_to(SHIPPED_MODELS_DIR / "backbones")
    return models


def seed_version(models_dir, words=("crack", "scratch"), products=None) -> str:
    """An initial (untrained) DAPO prompt version on qc-test-tiny, made active on disk. Its prompt
    initialisation is seeded (without touching the global RNG) so every run sees the same version."""
    import torch

    from qc_stream.dapo.backbone import load_backbone
    from qc_stream.dapo.checkpoint import save_prompt_version
    from qc_stream.dapo.model import DapoModel

    backbone = load_backbone("qc-test-tiny", models_dir=models_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DapoModel(backbone, vocabulary=list(words))
    path = save_prompt_version(
        model,
        models_dir,
        products=products or {"pill": ["crack"]},
        metrics={"image_auroc": 0.5},
        activate=True,
    )
    return path.name


@pytest.fixture
def setup(tmp_path, pg_url, broker):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    models = make_models_dir(tmp_path)
    settings = load_settings(
        database_url=pg_url,
        models_dir=models,
        backbone="qc-test-tiny",
        kafka_bootstrap=broker.bootstrap,
        redis_url="off",
    )
    seed = seed_version(models)
    defects = DefectTypeRepository(engine)
    versions = PromptVersions(
        settings,
        defects=defects,
        versions=ModelVersionRepository(engine),
        publisher=EventPublisher(broker.bootstrap),
    )
    yield settings, DefectRegistry(defects), versions, seed
    versions.close()
    engine.dispose()


def _announcements(bootstrap: str) -> list[dict]:
    from qc_stream.devtools.local import read_topic_to_end

    return [json.loads(r.value) for r in read_topic_to_end(bootstrap, MODEL_UPDATES_TOPIC)]


def test_zero_shot_refresh_makes_announces_and_rolls_back(setup, broker):
    from qc_stream.dapo.checkpoint import active_version, load_prompt_version, read_manifest

    settings, registry, versions, seed = setup
    product = f"p{uuid.uuid4().hex[:6]}"
    assert versions.active_name() == seed  # the shipped version is adopted into model_versions

    registry.add(product, "Delamination", "layers peel apart")
    outcome = versions.zero_shot_refresh()
    assert outcome.created and outcome.published and outcome.version != seed
    new = outcome.version
    manifest = read_manifest(new, settings.models_dir)
    assert manifest["kind"] == "zero-shot" and manifest["parent"] == seed
    assert manifest["vocabulary"]["products"][product] == ["Delamination"]
    assert (
        "Delamination" in manifest["vocabulary"]["words"]
        and "crack" in manifest["vocabulary"]["words"]
    )
    assert active_version(settings.models_dir) == new
    rows = {r.prompt_version: r for r in versions.list()}
    assert rows[new].active and not rows[seed].active and rows[new].parent_version == seed

    # Same trained parameters: no gradient step was taken.
    backbone = versions.backbone()
    a = load_prompt_version(seed, backbone, settings.models_dir).model.trainable_state_dict()
    b = load_prompt_version(new, backbone, settings.models_dir).model.trainable_state_dict()
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)

    # Nothing changed since: no new version.
    again = versions.zero_shot_refresh()
    assert not again.created and again.version == new

    # Rollback.
    back = versions.activate(seed)
    assert (
        back.published
        and versions.active_name() == seed
        and active_version(settings.models_dir) == seed
    )
    announced = [m["prompt_version"] for m in _announcements(broker.bootstrap)]
    assert announced[-2:] == [new, seed]
    assert all(
        m["backbone_id"] == backbone.backbone_id for m in _announcements(broker.bootstrap)[-2:]
    )


def test_retire_refresh_drops_the_word_and_unknown_version_is_refused(setup):
    settings, registry, versions, seed = setup
    registry.add("pill", "burr")
    first = versions.zero_shot_refresh().version
    registry.retire("pill", "burr")
    second = versions.zero_shot_refresh()
    assert second.created
    row = {r.prompt_version: r for r in versions.list()}[second.version]
    assert "burr" not in row.vocabulary["words"] and row.vocabulary["products"]["pill"] == ["crack"]
    assert row.parent_version == first
    with pytest.raises(QcError, match="not found"):
        versions.activate("no-such-version")
    assert versions.active_name() == second.version


def test_activating_a_version_of_another_backbone_is_refused_and_changes_nothing(setup):
    """A version made for qc-clip-tiny-cpu, while the registry runs qc-test-tiny: activating it
    would leave predict and every worker unable to load the active version."""
    import shutil

    from qc_stream.dapo.checkpoint import active_version
    from qc_stream.errors import ConfigError

    settings, _, versions, seed = setup
    other = "dapo-qc-clip-tiny-cpu-v1"
    shutil.copytree(SHIPPED_MODELS_DIR / "prompts" / other, settings.models_dir / "prompts" / other)
    with pytest.raises(ConfigError, match="made for backbone qc-clip-tiny-cpu@") as e:
        versions.activate(other)
    assert e.value.exit_code == 2 and "nothing changed" in str(e.value)
    assert versions.active_name() == seed and active_version(settings.models_dir) == seed
    assert not {r.prompt_version: r for r in versions.list()}[other].active
