"""`retrain`: progressive tuning + holdout evaluation + promotion gate. Postgres + files, no broker.

The gate can refuse a broken run only when the active version is measurably better than a broken
one, so the broken-run test starts from a genuinely decent seed version: DAPO on the shipped,
pretrained default backbone, tuned a few seeded steps on the held-out product's own synthetic
images (another seed than the holdout). On the random-weight qc-test-tiny the "active" metrics are
noise (on an 8-image holdout its image AUROC ranges from 0.0 to 0.83 with the prompt initialisation)
and a broken run beats such an active version by chance.
The other tests use qc-test-tiny (fast; it detects nothing): "a sane run" there is a near-zero
learning rate that cannot regress. Every model initialisation and data set is seeded."""

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from test_registry_versions import make_models_dir, seed_version

from qc_stream.dapo.checkpoint import active_version, read_manifest
from qc_stream.errors import InputError
from qc_stream.registry.retrain import RetrainJob, RetrainOptions
from qc_stream.registry.service import DefectRegistry
from qc_stream.registry.versions import PromptVersions
from qc_stream.settings import DEFAULT_BACKBONE, load_settings
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.model_versions import ModelVersionRepository
from qc_stream.storage.orm import ModelVersionRow

SMALL = dict(
    quick=True,
    train_per_product=1,
    holdout_per_product=8,
    holdout_products=("leather",),
    image_size=64,
    max_steps_per_stage=2,
)


# The broken-run test: one held-out product, large enough for both classes and for pixel metrics
# that separate a tuned version from a ruined one by a wide margin.
DECENT_PRODUCT = "fabric"
BROKEN = dict(
    quick=True,
    train_per_product=1,
    holdout_per_product=16,
    holdout_products=(DECENT_PRODUCT,),
    image_size=128,
    max_steps_per_stage=1,
)


def _decent_seed_version(models_dir) -> str:
    """An active version that really detects defects on DECENT_PRODUCT (image AUROC about 0.96, AUPRO
    about 0.7 on the holdout): the default backbone + DAPO, 3 seeded training steps on 8 images of
    that product (seed 101, not the validation seed the retrain holdout is drawn from)."""
    import torch

    from qc_stream.dapo.backbone import load_backbone
    from qc_stream.dapo.checkpoint import save_prompt_version
    from qc_stream.dapo.model import DapoModel
    from qc_stream.synth import PRODUCTS, generate
    from qc_stream.training.train import TrainConfig, train

    backbone = load_backbone(DEFAULT_BACKBONE, models_dir=models_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DapoModel(backbone)
        data = generate(DECENT_PRODUCT, n=8, seed=101, size=128, defect_rate=0.5)
        train(
            model,
            data,
            TrainConfig(
                stage_epochs=(1, 1, 1), max_steps_per_stage=1, lr=1e-2, seed=0, progress=False
            ),
        )
    products = {p: list(v.defects) for p, v in PRODUCTS.items()}
    return save_prompt_version(model, models_dir, products=products, activate=True).name


def _make_env(tmp_path, pg_url, backbone: str, make_seed):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    models = make_models_dir(tmp_path)
    seed = make_seed(models)
    settings = load_settings(
        database_url=pg_url, models_dir=models, backbone=backbone, redis_url="off"
    )
    defects = DefectTypeRepository(engine)
    versions = PromptVersions(settings, defects=defects, versions=ModelVersionRepository(engine))
    return versions, DefectRegistry(defects), seed, engine, models


@pytest.fixture
def env(tmp_path, pg_url):
    """qc-test-tiny with an untrained (seeded) active version."""
    made = _make_env(tmp_path, pg_url, "qc-test-tiny", seed_version)
    yield made
    made[3].dispose()


@pytest.fixture
def decent_env(tmp_path, pg_url):
    """The default backbone with a tuned, genuinely decent active version."""
    made = _make_env(tmp_path, pg_url, DEFAULT_BACKBONE, _decent_seed_version)
    yield made
    made[3].dispose()


def _row_count(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(ModelVersionRow)).scalar_one()


def _write_examples(root, product="pill", word="Delamination", n=4):
    """Synthetic 'stain' images relabelled as the registered type, with masks, plus good images."""
    from qc_stream.synth import generate

    defect_dir, masks_dir, good_dir = (
        root / product / word.lower(),
        root / product / word.lower() / "masks",
        root / product / "good",
    )
    for d in (masks_dir, good_dir):
        d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(
        generate(product, n=n, seed=5, size=64, defect_rate=1.0, defect_types=["stain"])
    ):
        Image.fromarray(s.image).save(defect_dir / f"{i}.png")
        if i % 2 == 0:  # half of them mask-free (image-level label only)
            Image.fromarray((s.mask > 0).astype(np.uint8) * 255).save(masks_dir / f"{i}.png")
    for i, s in enumerate(generate(product, n=n, seed=6, size=64, defect_rate=0.0)):
        Image.fromarray(s.image).save(good_dir / f"{i}.png")
    return root


def test_broken_training_run_is_refused_and_nothing_changes(decent_env):
    versions, _, seed, engine, models = decent_env
    assert versions.active_name() == seed
    rows_before = _row_count(engine)
    dirs_before = sorted(p.name for p in (models / "prompts").iterdir())

    # Clearly broken: shuffled labels (masks and words permuted across images) and an absurd rate.
    report = RetrainJob(
        versions, RetrainOptions(lr=1e6, shuffle_labels=True, tolerance=0.02, **BROKEN)
    ).run()

    print(report.message)
    # Precondition: the active version is worth defending; else a refusal (or promotion) is chance.
    active = report.active_metrics
    assert active["image_auroc"] > 0.9 and active["pixel_aupro"] > 0.5, (
        f"the seed version is not decent: {report.message}"
    )
    assert not report.promoted and report.version == seed
    assert report.decision.reasons and "REFUSED" in report.message
    assert versions.active_name() == seed and active_version(models) == seed
    assert _row_count(engine) == rows_before
    assert sorted(p.name for p in (models / "prompts").iterdir()) == dirs_before


def test_sane_run_with_examples_is_promoted_and_recorded(env, tmp_path):
    versions, registry, seed, engine, models = env
    registry.add("pill", "Delamination", "layers peel apart")
    examples = _write_examples(tmp_path / "examples")

    report = RetrainJob(
        versions, RetrainOptions(examples_dir=examples, lr=1e-7, tolerance=0.02, **SMALL)
    ).run()

    print(report.message)
    assert report.promoted, report.message
    new = report.version
    assert new != seed and versions.active_name() == new and active_version(models) == new
    manifest = read_manifest(new, models)
    assert manifest["kind"] == "trained" and manifest["parent"] == seed
    assert "Delamination" in manifest["vocabulary"]["products"]["pill"]
    assert "pill" in report.candidate_metrics["per_product"]  # the examples' holdout was evaluated
    row = {r.prompt_version: r for r in versions.list()}[new]
    assert row.active and set(row.metrics) >= {"image_auroc", "pixel_auroc", "type_f1"}

    # Rollback to the seed version works after a promotion.
    versions.activate(seed)
    assert versions.active_name() == seed and active_version(models) == seed


def test_examples_of_unregistered_types_are_refused(env, tmp_path):
    versions, *_ = env
    examples = _write_examples(tmp_path / "examples", word="Wrinkle", n=1)
    with pytest.raises(
        InputError, match="'wrinkle' is not an active registered defect type of product 'pill'"
    ):
        RetrainJob(versions, RetrainOptions(examples_dir=examples, **SMALL)).run()
