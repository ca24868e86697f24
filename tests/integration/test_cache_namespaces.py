"""Two deployments (two databases, two models folders) on one real Redis never see each other's
active prompt version: keys are prefixed per database, and a cached version the database or the
models folder does not have is checked and ignored even when a prefix is shared on purpose."""

import redis

from qc_stream.registry.versions import ACTIVE_CACHE_KEY, PromptVersions
from qc_stream.settings import database_identity, load_settings
from qc_stream.storage import migrate
from qc_stream.storage.cache import Cache
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.model_versions import ModelVersionRepository


def make_models_dir(root):
    """A models/ folder of our own that sees the repository's backbones."""
    from qc_stream.settings import SHIPPED_MODELS_DIR

    models = root / "models"
    models.mkdir()
    (models / "backbones").symlink_to(SHIPPED_MODELS_DIR / "backbones")
    return models


def seed_version(models_dir, words) -> str:
    """An untrained (seeded) DAPO version on qc-test-tiny, active on disk."""
    import torch

    from qc_stream.dapo.backbone import load_backbone
    from qc_stream.dapo.checkpoint import save_prompt_version
    from qc_stream.dapo.model import DapoModel

    backbone = load_backbone("qc-test-tiny", models_dir=models_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DapoModel(backbone, vocabulary=list(words))
    path = save_prompt_version(model, models_dir, products={"pill": ["crack"]}, activate=True)
    return path.name


def _deployment(root, redis_url, prefix=None, words=("crack", "scratch")):
    root.mkdir()
    url = f"sqlite:///{root / 'qc.db'}"
    migrate.upgrade(url)
    models = make_models_dir(root)
    seed = seed_version(models, words=words)
    settings = load_settings(
        database_url=url,
        models_dir=models,
        backbone="qc-test-tiny",
        redis_url=redis_url,
        redis_prefix=prefix,
    )
    engine = make_engine(url)
    versions = PromptVersions(
        settings,
        defects=DefectTypeRepository(engine),
        versions=ModelVersionRepository(engine),
        cache=Cache.from_settings(settings),
    )
    return settings, versions, seed, engine


def _second_version(settings, versions) -> str:
    """Another version on A's disk, activated through the registry (as a retrain would)."""
    from qc_stream.dapo.checkpoint import (
        load_prompt_version,
        save_prompt_version,
        set_active_version,
    )

    active = versions.active_name()
    model = load_prompt_version(active, versions.backbone(), settings.models_dir).model
    path = save_prompt_version(
        model, settings.models_dir, "a-only-v2", products={"pill": ["crack"]}
    )
    versions.sync_from_disk()
    versions.activate(path.name)
    set_active_version(path.name, settings.models_dir)
    return path.name


def _drop(redis_url, prefixes):
    client = redis.Redis.from_url(redis_url)
    for prefix in prefixes:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    client.close()


def test_prefixes_differ_per_database_and_hide_the_password():
    a = database_identity("postgresql+psycopg://qc:secret@db:5432/line1")
    assert a == database_identity("postgresql+psycopg://qc:other@db:5432/line1")  # not the password
    assert a != database_identity("postgresql+psycopg://qc:secret@db:5432/line2")
    assert load_settings(redis_prefix="plant-7:").cache_prefix == "plant-7:"
    assert load_settings(database_url="sqlite:///x.db").cache_prefix.startswith("qc:")


def test_two_databases_on_one_redis_never_see_each_others_active_version(tmp_path, redis_url):
    sa, a, seed_a, ea = _deployment(tmp_path / "a", redis_url)
    sb, b, seed_b, eb = _deployment(tmp_path / "b", redis_url)
    try:
        assert sa.cache_prefix != sb.cache_prefix
        assert a.active_name() == seed_a
        newer = _second_version(sa, a)
        assert a.active_name() == newer  # A's cache now holds A's new version
        assert b.active_name() == seed_b  # B never reads A's key
        assert a.cache.get_or_load(ACTIVE_CACHE_KEY, lambda: None) == newer
    finally:
        _drop(redis_url, [sa.cache_prefix, sb.cache_prefix])
        ea.dispose()
        eb.dispose()


def test_a_shared_prefix_still_never_answers_with_a_version_this_database_lacks(
    tmp_path, redis_url, redis_prefix
):
    sa, a, seed_a, ea = _deployment(tmp_path / "a", redis_url, prefix=redis_prefix)
    sb, b, seed_b, eb = _deployment(tmp_path / "b", redis_url, prefix=redis_prefix)
    try:
        newer = _second_version(sa, a)
        assert a.active_name() == newer  # the shared key now names a version only A has
        assert b.active_name() == seed_b  # B checks it against its database and models folder
    finally:
        ea.dispose()
        eb.dispose()
