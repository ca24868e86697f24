"""The pretraining script's encoders (`scripts/pretrain_backbone.py`). Image: at the native size and
without token dropping it is open_clip's own `encode_image`; with token dropping (FLIP) it drops
the right number of patch tokens, seeded, and still gives one embedding per image. Text: cut to the
batch's longest caption it runs fewer positions and still equals open_clip's `encode_text`."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from qc_stream.settings import REPO_ROOT, SHIPPED_MODELS_DIR

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "pretrain_backbone", REPO_ROOT / "scripts" / "pretrain_backbone.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pretrain_backbone", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    import open_clip

    torch.manual_seed(0)
    m = open_clip.create_model(
        f"local-dir:{SHIPPED_MODELS_DIR / 'backbones' / 'qc-test-tiny'}", load_weights=False
    )
    return m.eval()


def _native_size(model) -> int:
    size = model.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else size


def test_full_tokens_at_native_size_equal_open_clip(script, model):
    x = torch.randn(3, 3, _native_size(model), _native_size(model))
    with torch.no_grad():
        ours = script.encode_image_any_size(model, x)
        theirs = model.encode_image(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_token_dropping_keeps_the_asked_share_and_is_seeded(script, model):
    x = torch.randn(4, 3, _native_size(model), _native_size(model))
    seen = []
    real_transformer = model.visual.transformer.forward

    def spy(t, *a, **k):
        seen.append(t.shape[1])
        return real_transformer(t, *a, **k)

    model.visual.transformer.forward = spy
    try:
        with torch.no_grad():
            a, pa = script.encode_image_any_size(
                model, x, with_patch_mean=True, keep=0.5, generator=torch.Generator().manual_seed(7)
            )
            b, _ = script.encode_image_any_size(
                model, x, with_patch_mean=True, keep=0.5, generator=torch.Generator().manual_seed(7)
            )
            full = script.encode_image_any_size(model, x)
    finally:
        del model.visual.transformer.forward
    n_patches = (_native_size(model) // model.visual.patch_size[0]) ** 2
    assert seen[0] == 1 + round(n_patches * 0.5) and seen[2] == 1 + n_patches
    assert a.shape == pa.shape == full.shape == (4, model.visual.proj.shape[1])
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, full)


def test_always_kept_patches_survive_token_dropping(script, model):
    # two images that differ in one patch only: with the same seed, their embeddings differ iff
    # that patch was kept. Flagged as always kept, it must survive every draw; unflagged, a 1-in-8
    # keep share drops it in most draws.
    size, p = _native_size(model), model.visual.patch_size[0]
    g = size // p
    a = torch.randn(1, 3, size, size)
    b = a.clone()
    b[..., p : 2 * p, p : 2 * p] += 3.0  # patch (1, 1)
    flag = torch.zeros(1, g * g, dtype=torch.bool)
    flag[:, g + 1] = True

    def differs(always_keep, seed):
        with torch.no_grad():  # one image per call, same seed: the same patches are drawn for both
            ea, eb = (
                script.encode_image_any_size(
                    model,
                    img,
                    keep=0.125,
                    always_keep=always_keep,
                    generator=torch.Generator().manual_seed(seed),
                )
                for img in (a, b)
            )
        return not torch.allclose(ea, eb)

    assert all(differs(flag, seed) for seed in range(8))
    assert sum(differs(None, seed) for seed in range(8)) <= 4


def test_batches_mark_the_patches_a_defect_covers(script):
    args = script.parse_args(["--batch", "16", "--mask-ratio", "0.75", "--keep-defect-tokens"])
    batch = script.make_batch(0, args, lambda texts: torch.zeros(len(texts), 4, dtype=torch.long))
    size = batch["images"].shape[1]
    flags = batch["defect_patches"]
    assert flags.shape == (16, (size // script.PATCH) ** 2) and flags.dtype == torch.bool
    assert batch["positives"].shape == (16, 16)
    assert flags.any(dim=1).sum() > 0  # some images carry a defect
    assert flags.sum(dim=1).max() < flags.shape[1]  # a defect is local
    plain_args = script.parse_args(["--batch", "16", "--mask-ratio", "0.75"])
    plain = script.make_batch(
        0, plain_args, lambda texts: torch.zeros(len(texts), 4, dtype=torch.long)
    )
    assert "defect_patches" not in plain  # not computed when the run does not use them


def test_decoys_give_every_image_a_defect_pattern_and_leave_defects_alone(script):
    import numpy as np

    patterns = np.zeros((6, 9), bool)
    patterns[1, [0, 1]] = True
    patterns[4, [7]] = True
    out = script.add_decoys(patterns, np.random.default_rng(0))
    assert out.any(axis=1).all()  # no image is left without a cluster of kept patches
    assert (out[[1, 4]] == patterns[[1, 4]]).all()  # a defect keeps its own patches
    donors = {tuple(patterns[1]), tuple(patterns[4])}
    assert all(tuple(row) in donors for row in out)  # decoys are copies of real defect patterns
    assert not patterns[[0, 2, 3, 5]].any()  # the input is not changed in place
    none = np.zeros((3, 9), bool)
    assert not script.add_decoys(
        none, np.random.default_rng(0)
    ).any()  # no defect in the batch: no decoy

    args = script.parse_args(
        ["--batch", "16", "--mask-ratio", "0.75", "--keep-defect-tokens", "--decoy-keep"]
    )
    batch = script.make_batch(0, args, lambda texts: torch.zeros(len(texts), 4, dtype=torch.long))
    assert batch["defect_patches"].any(dim=1).all()
    with pytest.raises(SystemExit):  # decoys without kept defect patches would silently do nothing
        script.parse_args(["--mask-ratio", "0.75", "--decoy-keep"])


def test_token_plan_follows_the_budget(script):
    plain = script.parse_args(["--mask-ratio", "0.75", "--unmasked-share", "0.15"])
    assert script.token_plan(0.2, plain) == (0.25, False)
    assert script.token_plan(0.9, plain) == (1.0, False)  # the last 15 % sees every token
    assert script.token_plan(0.5, script.parse_args([])) == (1.0, False)  # no dropping at all
    late = script.parse_args(
        [
            "--mask-ratio",
            "0.75",
            "--unmasked-share",
            "0.15",
            "--keep-defect-tokens",
            "--keep-defect-from",
            "0.5",
        ]
    )
    assert script.token_plan(0.3, late) == (0.25, False)  # first half: random dropping only
    assert script.token_plan(0.6, late) == (0.25, True)
    assert script.token_plan(0.9, late) == (1.0, False)
    always = script.parse_args(["--mask-ratio", "0.75", "--keep-defect-tokens"])
    assert script.token_plan(0.0, always) == (0.25, True)
    with pytest.raises(SystemExit):  # without kept defect tokens it would silently do nothing
        script.parse_args(["--mask-ratio", "0.75", "--keep-defect-from", "0.5"])
    with pytest.raises(SystemExit):
        script.parse_args(
            ["--mask-ratio", "0.75", "--keep-defect-tokens", "--keep-defect-from", "1.0"]
        )


def test_trimmed_text_encoder_equals_open_clip(script, model):
    import open_clip

    tokenizer = open_clip.get_tokenizer(
        f"local-dir:{SHIPPED_MODELS_DIR / 'backbones' / 'qc-test-tiny'}"
    )
    tokens = tokenizer(
        [
            "a photo of a scratched metal plate",
            "hole",
            "a close-up of a cracked ceramic tile with a chip",
        ]
    )
    assert (tokens != 0).sum(dim=1).max() < tokens.shape[1]  # there is padding to cut
    seen = []
    real_transformer = model.transformer.forward

    def spy(t, *a, **k):
        seen.append(t.shape[1])
        return real_transformer(t, *a, **k)

    model.transformer.forward = spy
    try:
        with torch.no_grad():
            ours = script.encode_text_trimmed(model, tokens)
    finally:
        del model.transformer.forward
    with torch.no_grad():
        theirs = model.encode_text(tokens)
    assert seen == [int((tokens != 0).sum(dim=1).max())]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_step_timer_reports_each_part_and_rejects_a_full_mask():
    import subprocess

    script = REPO_ROOT / "scripts" / "time_pretrain_step.py"
    done = subprocess.run(
        [sys.executable, str(script), "--batch", "8", "--repeats", "1", "--mask-ratio", "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.rstrip().endswith(" s")]
    assert [line.split()[0] for line in lines] == ["data", "image", "text", "text"]
    assert "50% of tokens dropped" in done.stdout
    bad = subprocess.run(
        [sys.executable, str(script), "--mask-ratio", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--mask-ratio must be in [0, 1)" in bad.stderr


def test_sizes_off_the_patch_grid_are_refused(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--low-res", "100"])
    assert "multiples of the patch size" in capsys.readouterr().err
