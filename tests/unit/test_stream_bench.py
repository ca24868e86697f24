"""The benchmark's own arithmetic and its choice of prompts (no broker, no worker)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from qc_stream.errors import QcError
from qc_stream.settings import DEFAULT_MODELS_DIR, load_settings
from qc_stream.stream.bench import _prompts_fit, _steady_fps, _untrained_models_dir


def test_steady_fps_skips_warmup_batches_and_counts_frames_after_the_first_timed_batch():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # 2 warm-up batches (slow), then 4 batches of 16 one second apart.
    stamps = [t0] * 16 + [t0 + timedelta(seconds=10)] * 16
    stamps += [t0 + timedelta(seconds=20 + i) for i in range(4) for _ in range(16)]
    fps, batches = _steady_fps(stamps)
    assert batches == 6
    assert fps == pytest.approx(48 / 3)  # 3 batches of 16 after the first timed one, over 3 s
    with pytest.raises(QcError, match="too few batches"):
        _steady_fps([t0] * 16)


def test_bench_uses_untrained_prompts_when_the_active_version_is_for_another_backbone(tmp_path):
    from qc_stream.dapo.backbone import load_backbone
    from qc_stream.dapo.checkpoint import save_prompt_version
    from qc_stream.dapo.model import DapoModel

    models = tmp_path / "models"
    models.mkdir()
    (models / "backbones").symlink_to(DEFAULT_MODELS_DIR / "backbones")
    model = DapoModel(load_backbone("qc-test-tiny", models_dir=models), vocabulary=["crack", "scratch"])
    save_prompt_version(model, models, products={"pill": ["crack"]}, activate=True)

    assert _prompts_fit(load_settings(backbone="qc-test-tiny", models_dir=models))
    other = load_settings(backbone="ViT-L-14-336-quickgelu", pretrained="none", models_dir=models)
    assert not _prompts_fit(other)
    work = tmp_path / "work"
    work.mkdir()
    root = _untrained_models_dir(other, work)
    assert (root / "backbones" / "qc-test-tiny").is_dir() and not (root / "prompts").exists()
