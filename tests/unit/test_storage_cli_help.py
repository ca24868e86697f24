"""`qc-stream --help` stays light: no torch, model, Faust or database libraries get imported."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "torch",
    "torchvision",
    "open_clip",
    "faust",
    "aiokafka",
    "cv2",
    "sklearn",
    "sqlalchemy",
    "alembic",
)

PROBE = """
import json, sys
from qc_stream.cli.main import app
sys.argv = ["qc-stream", "--help"]
try:
    app()
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))}))
"""


def test_help_does_not_import_heavy_libraries():
    out = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["code"] in (0, None)
    assert report["heavy"] == [], (
        f"qc-stream --help imported {report['heavy']}; move those imports into command bodies"
    )
    assert "db" in out
