"""The benchmark's own arithmetic and its choice of prompts (no broker, no worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qc_stream.devtools.bench import (
    _cpu_seconds,
    _frames,
    _steady,
    bench_prompts,
    parse_frame_size,
)
from qc_stream.errors import QcError
from qc_stream.settings import SHIPPED_MODELS_DIR, load_settings


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
    (models / "backbones").symlink_to(SHIPPED_MODELS_DIR / "backbones")
    no_db = f"sqlite:///{tmp_path / 'none.db'}"
    empty = load_settings(backbone="qc-test-tiny", models_dir=models, database_url=no_db)
    pinned, note = bench_prompts(empty)
    assert pinned.prompt_version == "untrained" and "no prompt version" in note
    model = DapoModel(
        load_backbone("qc-test-tiny", models_dir=models), vocabulary=["crack", "scratch"]
    )
    path = save_prompt_version(model, models, products={"pill": ["crack"]}, activate=True)

    pinned, note = bench_prompts(empty)
    assert (pinned.prompt_version, note) == (path.name, None)  # the bare model and workers alike
    other = empty.model_copy(update={"backbone": "ViT-L-14-336-quickgelu"})
    pinned, note = bench_prompts(other)
    assert pinned.prompt_version == "untrained" and "made for another backbone" in note
    assert not (tmp_path / "none.db").exists()  # asking never creates a database


def test_frame_size_is_a_side_or_width_by_height():
    assert parse_frame_size("256") == (256, 256)
    assert parse_frame_size("1280x1024") == (1280, 1024)
    assert parse_frame_size("2448X2048") == (2448, 2048)
    for bad in ("", "big", "1280x", "1x2x3", "16", "100000x20"):
        with pytest.raises(QcError, match="--frame-size"):
            parse_frame_size(bad)


def test_frames_are_camera_jpegs_of_the_asked_size():
    import io

    from PIL import Image

    frames = _frames(6, (320, 200), seed=3)
    assert len(frames) == 6 and {p for p, _ in frames} <= {"pill", "screw", "wood", "tile"}
    for product, f in frames:
        img = Image.open(io.BytesIO(f.data))
        assert img.format == "JPEG" and img.size == (320, 200) and f.product == product
    square = _frames(2, 64, seed=3)
    assert Image.open(io.BytesIO(square[0][1].data)).size == (64, 64)


def test_worker_cpu_seconds_come_from_the_process_itself():
    import subprocess
    import sys

    class Proc:  # the one attribute of WorkerProcess that _cpu_seconds reads
        def __init__(self, popen):
            self.proc = popen

    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass\nimport sys; sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        import time

        deadline = time.monotonic() + 30
        while _cpu_seconds([Proc(busy)]) < 0.45 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _cpu_seconds([Proc(busy)]) >= 0.45
    finally:
        busy.communicate(b"")
