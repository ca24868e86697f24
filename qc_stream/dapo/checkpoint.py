"""Prompt versions on disk: the trained parameters only, plus a manifest.

Layout under ``<models_dir>/prompts/``::

    <version>/prompts.safetensors   trainable tensors of the method (no backbone weight)
    <version>/manifest.json         {format, version, method, backbone{name, pretrained, backbone_id,
                                     weights_sha256, image_size}, config, train_config, vocabulary{words,
                                     products}, metrics, created_at, parent, kind}
    ACTIVE                          the active version's name

A version is bound to its backbone's weights (sha256): loading it on another backbone raises a
``QcError`` that names both. Versions are written to a temporary folder and renamed into place, so
a reader never sees half a version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from safetensors.torch import load_file, save_file

from qc_stream.dapo.backbone import Backbone
from qc_stream.dapo.baselines import build_model
from qc_stream.dapo.model import PromptDetector
from qc_stream.errors import QcError
from qc_stream.settings import DEFAULT_MODELS_DIR

FORMAT = 1
WEIGHTS = "prompts.safetensors"
MANIFEST = "manifest.json"
ACTIVE = "ACTIVE"
KINDS = ("trained", "zero-shot")
# What a version *name* may be when it arrives from outside (qc.model-updates): no path separator,
# no leading dot, so it can only name a folder directly under <models_dir>/prompts/.
VERSION_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass
class PromptVersion:
    version: str
    path: Path
    manifest: dict
    model: PromptDetector

    @property
    def words(self) -> list[str]:
        return list(self.manifest["vocabulary"]["words"])

    @property
    def products(self) -> dict[str, list[str]]:
        return dict(self.manifest["vocabulary"].get("products", {}))


def prompts_dir(models_dir: str | Path | None = None) -> Path:
    if models_dir is None:
        models_dir = DEFAULT_MODELS_DIR
    return Path(models_dir) / "prompts"


def new_version_name(method: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{method}-{stamp}-{secrets.token_hex(2)}"


def _check_version_name(version: str) -> None:
    if (
        not version
        or any(c in version for c in "/\\")
        or version.startswith(".")
        or version == ACTIVE
    ):
        raise QcError(f"invalid prompt version name {version!r}")


def save_prompt_version(
    model: PromptDetector,
    models_dir: str | Path | None = None,
    version: str | None = None,
    *,
    metrics: Mapping | None = None,
    products: Mapping[str, Sequence[str]] | None = None,
    parent: str | None = None,
    kind: str = "trained",
    train_config: Mapping | None = None,
    activate: bool = False,
) -> Path:
    """Write ``model``'s trainable parameters + manifest as a new version; return its folder.

    Vocabulary: ``model.vocabulary`` and ``products`` (default ``model.product_words``).
    ``kind="zero-shot"`` marks a version whose vocabulary changed without training (``parent``: the
    version its weights come from).
    """
    if kind not in KINDS:
        raise QcError(f"kind must be one of {KINDS}, got {kind!r}")
    version = version or new_version_name(model.method)
    _check_version_name(version)
    root = prompts_dir(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise QcError(f"prompt version {version!r} already exists in {root}")
    products = {
        p: list(ws) for p, ws in (products if products is not None else model.product_words).items()
    }
    manifest = {
        "format": FORMAT,
        "version": version,
        "method": model.method,
        "backbone": model.backbone.info(),
        "config": model.config_dict(),
        "train_config": dict(train_config) if train_config else None,
        "vocabulary": {"words": list(model.vocabulary), "products": products},
        "metrics": dict(metrics) if metrics else {},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parent": parent,
        "kind": kind,
    }
    tmp = root / f".{version}.tmp-{secrets.token_hex(3)}"
    tmp.mkdir()
    try:
        state = {
            k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()
        }
        save_file(
            state,
            str(tmp / WEIGHTS),
            metadata={"version": version, "backbone_id": model.backbone.backbone_id},
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if activate:
        set_active_version(version, models_dir)
    return final


def resolve_version_path(path_or_version: str | Path, models_dir: str | Path | None = None) -> Path:
    """A version folder from a path or a version name under ``<models_dir>/prompts``."""
    candidate = Path(path_or_version)
    if (candidate / MANIFEST).is_file():
        return candidate
    name = str(path_or_version)
    if name and "/" not in name and "\\" not in name and not name.startswith("."):
        under = prompts_dir(models_dir) / name
        if (under / MANIFEST).is_file():
            return under
    known = [m["version"] for m in list_versions(models_dir)]
    raise QcError(
        f"prompt version {str(path_or_version)!r} not found in {prompts_dir(models_dir)}"
        + (f" (known: {', '.join(known[-5:])})" if known else " (no versions saved yet)")
    )


def read_manifest(path_or_version: str | Path, models_dir: str | Path | None = None) -> dict:
    path = resolve_version_path(path_or_version, models_dir)
    try:
        return json.loads((path / MANIFEST).read_text())
    except json.JSONDecodeError as e:
        raise QcError(f"{path / MANIFEST}: broken manifest ({e.msg})") from None


def check_backbone(manifest: dict, backbone: Backbone) -> None:
    """Raise ``QcError`` unless ``manifest`` was made for exactly these backbone weights."""
    want = manifest.get("backbone", {})
    if want.get("weights_sha256") != backbone.weights_sha256:
        raise QcError(
            f"prompt version {manifest.get('version')!r} was made for backbone {want.get('backbone_id')} "
            f"({want.get('name')}, pretrained={want.get('pretrained')}), but the loaded backbone is "
            f"{backbone.backbone_id}; load that backbone, choose a prompt version made for this one, or "
            f"train one: {train_command(backbone)}"
        )


def train_command(backbone: Backbone) -> str:
    """The ``qc-stream train`` line that makes a prompt version for exactly ``backbone``."""
    return (
        f"qc-stream train --dataset PATH --backbone {backbone.name}"
        + (f" --pretrained {backbone.weights_path}" if backbone.weights_path else "")
        + (f" --image-size {backbone.image_size}" if backbone.image_size else "")
    )


def load_prompt_version(
    path_or_version: str | Path,
    backbone: Backbone,
    models_dir: str | Path | None = None,
) -> PromptVersion:
    """Rebuild the saved model on ``backbone`` (refused with ``QcError`` if it is another backbone)."""
    path = resolve_version_path(path_or_version, models_dir)
    manifest = read_manifest(path)
    if manifest.get("format") != FORMAT:
        raise QcError(f"{path}: unsupported prompt format {manifest.get('format')!r}")
    check_backbone(manifest, backbone)
    vocab = manifest.get("vocabulary", {})
    config = dict(manifest.get("config") or {})
    if manifest["method"] == "agnostic" and "dpam_layers" not in config:
        # saved before DPAM and AnomalyCLIP-depth deep prompts: rebuilt exactly as it was trained
        config.update(dpam_layers=0, deep_text_depth=None)
    model = build_model(manifest["method"], backbone, config, vocabulary=vocab.get("words", []))
    model.product_words = {p: list(ws) for p, ws in vocab.get("products", {}).items()}
    state = load_file(str(path / WEIGHTS), device=str(backbone.device))
    model.load_trainable_state_dict(state)
    model.eval()
    return PromptVersion(version=manifest["version"], path=path, manifest=manifest, model=model)


def version_sha256(path: str | Path) -> str:
    """One sha256 over a version folder's files (manifest, then weights), each framed by its name
    and length: what the registry records and a worker checks before swapping to the version."""
    digest = hashlib.sha256()
    for name in (MANIFEST, WEIGHTS):
        data = (Path(path) / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def list_versions(models_dir: str | Path | None = None) -> list[dict]:
    """Manifests of all saved versions, oldest first."""
    root = prompts_dir(models_dir)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).is_file():
            try:
                out.append(json.loads((d / MANIFEST).read_text()))
            except json.JSONDecodeError:
                continue
    return sorted(out, key=lambda m: (m.get("created_at", ""), m.get("version", "")))


def active_version(models_dir: str | Path | None = None) -> str | None:
    """The name in ``<models_dir>/prompts/ACTIVE``, or None."""
    f = prompts_dir(models_dir) / ACTIVE
    if not f.is_file():
        return None
    name = f.read_text().strip()
    return name or None


def set_active_version(version: str, models_dir: str | Path | None = None) -> None:
    """Point ``ACTIVE`` at an existing version (atomic replace)."""
    resolve_version_path(version, models_dir)  # must exist
    root = prompts_dir(models_dir)
    tmp = root / f".{ACTIVE}.tmp-{secrets.token_hex(3)}"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / ACTIVE)
