"""The wheel's data files, computed when it is built; pyproject.toml holds everything else.

The wheel carries what `qc-stream predict` and `qc-stream db upgrade` need in a fresh venv: the
default backbone (``DEFAULT_BACKBONE`` in qc_stream/settings.py), the prompt version named by
models/prompts/ACTIVE and the Alembic migrations, under ``<prefix>/share/qc-stream/`` (see
qc_stream.paths: the per-user models folder is seeded from them). Both follow the checkout, so
activating another shipped version and rebuilding ships that one.

Standard library only, and qc_stream is read, not imported: the build may run isolated, without the
project's dependencies.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

SHARE = "share/qc-stream"


def default_backbone(root: Path) -> str:
    """``DEFAULT_BACKBONE`` of ``root``/qc_stream/settings.py (a module-level string constant)."""
    settings = root / "qc_stream" / "settings.py"
    for node in ast.parse(settings.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "DEFAULT_BACKBONE" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise SystemExit(f"error: no DEFAULT_BACKBONE = '<name>' in {settings}")


def _files(root: Path, folder: Path) -> list[str]:
    """The regular files of ``folder``, relative to ``root`` (setup() wants relative paths)."""
    return sorted(
        str(p.relative_to(root))
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".")
    )


def wheel_data_files(root: Path) -> list[tuple[str, list[str]]]:
    """``data_files`` for setup(): the default backbone's folder, the ACTIVE prompt version's folder
    with the ACTIVE file, and the migrations. A missing folder, or an ACTIVE version made for
    another backbone, stops the build: that wheel could not run `qc-stream predict`."""
    root = Path(root)
    backbone = default_backbone(root)
    backbone_dir = root / "models" / "backbones" / backbone
    active_file = root / "models" / "prompts" / "ACTIVE"
    if not backbone_dir.is_dir():
        raise SystemExit(f"error: the default backbone's folder {backbone_dir} is missing")
    if not active_file.is_file():
        raise SystemExit(f"error: {active_file} is missing: no active prompt version to ship")
    active = active_file.read_text().strip()
    version_dir = root / "models" / "prompts" / active
    manifest = version_dir / "manifest.json"
    if not active or not manifest.is_file():
        raise SystemExit(f"error: ACTIVE names {active!r}, but {manifest} is missing")
    made_for = (json.loads(manifest.read_text()).get("backbone") or {}).get("name")
    if made_for != backbone:
        raise SystemExit(
            f"error: the active prompt version {active} was made for backbone {made_for!r}, not the "
            f"default {backbone!r}: activate a version of {backbone} before building the wheel"
        )
    migrations = [f for f in _files(root, root / "migrations" / "versions") if f.endswith(".py")]
    return [
        (f"{SHARE}/migrations", ["migrations/env.py", "migrations/script.py.mako"]),
        (f"{SHARE}/migrations/versions", migrations),
        (f"{SHARE}/models/backbones/{backbone}", _files(root, backbone_dir)),
        (f"{SHARE}/models/prompts", ["models/prompts/ACTIVE"]),
        (f"{SHARE}/models/prompts/{active}", _files(root, version_dir)),
    ]


if __name__ == "__main__":  # run by the build backend; the tests import wheel_data_files
    import sys

    from setuptools import setup

    # Only a wheel needs them: an editable install (`make venv`) runs from the checkout's models/
    # and migrations/, and must not fail because a developer activated a GPU-backbone version.
    building_wheel = "bdist_wheel" in sys.argv
    setup(data_files=wheel_data_files(Path(__file__).resolve().parent) if building_wheel else [])
