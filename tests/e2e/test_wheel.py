"""The built wheel, installed into a fresh venv outside the repository, runs `qc-stream predict`
on a PNG and `qc-stream db upgrade` on SQLite: the wheel carries the default backbone, its active
prompt version and the migrations, and the models folder is a per-user one seeded from them.

The wheel is built from a copy of the checkout (so the repository gets no build/ folder) with the
project venv's setuptools (no build isolation: no download). The fresh venv sees the project
venv's site-packages for the third-party dependencies only (a plain path in a .pth file: the
project's own editable install is not imported), so qc_stream comes from the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from qc_stream.settings import DEFAULT_BACKBONE

REPO = Path(__file__).resolve().parents[2]


def _copy_sources(dest: Path) -> None:
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "qc_stream", dest / "qc_stream", ignore=ignore)
    shutil.copytree(REPO / "migrations", dest / "migrations", ignore=ignore)
    shutil.copytree(REPO / "models", dest / "models")  # every shipped version: the wheel picks


def _shipped(wheel: Path, kind: str) -> set[str]:
    """Names of the models/<kind>/ entries the wheel carries as data files."""
    marker = f"/share/qc-stream/models/{kind}/"
    with zipfile.ZipFile(wheel) as zf:
        return {n.split(marker)[1].split("/")[0] for n in zf.namelist() if marker in n}


def test_wheel_in_a_fresh_venv_runs_predict_and_db_upgrade(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _copy_sources(src)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-w", str(dist), "-q"],
        capture_output=True, text=True, timeout=600, cwd=src,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("qc_stream-*.whl")
    active = (REPO / "models" / "prompts" / "ACTIVE").read_text().strip()
    # the data files follow ACTIVE and the default backbone (setup.py): that version only
    assert _shipped(wheel, "prompts") == {"ACTIVE", active}
    assert _shipped(wheel, "backbones") == {DEFAULT_BACKBONE}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    work = tmp_path / "work"  # outside the repository, as a user's folder
    work.mkdir()
    home = tmp_path / "home"
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "QC_DEVICE": "cpu",
        "QC_REDIS_URL": "off",
        "QC_DATABASE_URL": f"sqlite:///{work / 'qc.db'}",
        "OMP_NUM_THREADS": "2",
    }
    where = subprocess.run(
        [str(py), "-c", "import qc_stream; print(qc_stream.__file__)"],
        capture_output=True, text=True, env=env, cwd=work, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout

    png = work / "part.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
        png
    )
    qc = str(venv / "bin" / "qc-stream")
    run = dict(capture_output=True, text=True, env=env, cwd=work, timeout=600)
    predict = subprocess.run([qc, "predict", str(png), "-p", "pill"], **run)
    assert predict.returncode == 0, predict.stderr
    line = json.loads(predict.stdout)
    assert line["prompt_version"] == active and line["verdict"] in ("ok", "warn", "reject")
    assert line["thresholds"]["source"] == f"calibrated:{active}"
    user_models = home / ".local" / "share" / "qc-stream" / "models"
    assert (user_models / "prompts" / "ACTIVE").read_text().strip() == active  # seeded

    upgrade = subprocess.run([qc, "db", "upgrade"], **run)
    assert upgrade.returncode == 0, upgrade.stderr
    import sqlite3

    with sqlite3.connect(work / "qc.db") as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert {"inspections", "model_versions", "defect_types", "alembic_version"} <= tables
    assert not (work / "models").exists()  # the models folder is the per-user one
