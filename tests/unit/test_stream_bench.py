"""The benchmark's own arithmetic and its choice of prompts (no broker, no worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qc_stream.devtools.bench import _prompts_fit, _steady, _untrained_models_dir
from qc_stream.errors import QcError
from qc_stream.settings import DEFAULT_MODELS_DIR, load_settings


def test_steady_counts_frames_after_the_first_batch_over_the_span_of_batches():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # 4 batches of 16 one second apart (a batch = one processed_at); the round's warm-up is separate
    stamps = [t0 + timedelta(seconds=20 + i) for i in range(4) for _ in range(16)]
    frames, seconds = _steady(stamps)
    assert (frames, seconds) == (48, 3.0)  # 3 batches of 16 after the first one, over 3 s
    assert _steady(list(reversed(stamps))) == (48, 3.0)  # row order does not matter
    with pytest.raises(QcError, match="too few batches"):
        _steady([t0] * 16)


def test_bench_uses_untrained_prompts_when_the_active_version_is_for_another_backbone(tmp_path):
    from qc_stream.dapo.backbone import load_backbone
    from qc_stream.dapo.checkpoint import save_prompt_version
    from qc_stream.dapo.model import DapoModel

    models = tmp_path / "models"
    models.mkdir()
    (models / "backbones").symlink_to(DEFAULT_MODELS_DIR / "backbones")
    model = DapoModel(
        load_backbone("qc-test-tiny", models_dir=models), vocabulary=["crack", "scratch"]
    )
    save_prompt_version(model, models, products={"pill": ["crack"]}, activate=True)

    assert _prompts_fit(load_settings(backbone="qc-test-tiny", models_dir=models))
    other = load_settings(backbone="ViT-L-14-336-quickgelu", pretrained="none", models_dir=models)
    assert not _prompts_fit(other)
    work = tmp_path / "work"
    work.mkdir()
    root = _untrained_models_dir(other, work)
    assert (root / "backbones" / "qc-test-tiny").is_dir() and not (root / "prompts").exists()
