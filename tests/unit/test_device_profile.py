"""scripts/device/profile_detect.py, the device's stage profiler, run on the CPU with the test backbone
(the GPU it is meant for cannot exist here)."""

from __future__ import annotations

import importlib.util
import json

from qc_stream.settings import REPO_ROOT


def _load():
    spec = importlib.util.spec_from_file_location(
        "profile_detect", REPO_ROOT / "scripts" / "device" / "profile_detect.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_reports_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QC_BACKBONE", "qc-test-tiny")
    monkeypatch.setenv("QC_DEVICE", "cpu")
    monkeypatch.setenv("QC_PRECISION", "fp32")
    out = tmp_path / "profile.json"
    assert (
        _load().main(
            [
                "--frames",
                "16",
                "--batch",
                "8",
                "--repeats",
                "1",
                "--cprofile",
                "3",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert set(stages) == {
        "cpu resize only",
        "resize + upload + normalise",
        "image encoder on a ready tensor",
        "  the same, MHA fast path off",
        "DAPO forward on a ready tensor",
        "encode_images (pictures)",
        "detect (pictures)",
    }
    assert all(s["ms_per_batch"] > 0 and s["fps"] > 0 for s in stages.values())
    assert report["backbone"].startswith("qc-test-tiny@") and report["batch"] == 8
    assert "function calls" in capsys.readouterr().out  # the cProfile listing
