"""The frozen open_clip backbone that every DAPO model and baseline sits on.

``load_backbone`` resolves a name to an open_clip model, offline:

- a folder ``<models_dir>/backbones/<name>/``, else the shipped ``backbones/<name>/`` (or a path to
  such a folder) holding
  ``open_clip_config.json`` in open_clip's local-dir format (``{"model_cfg": ..., "preprocess_cfg": ...}``)
  and optionally ``weights.safetensors``;
- or an open_clip architecture name (``ViT-L-14-336-quickgelu``).

Weights (``pretrained``): ``None`` = the folder's shipped weights, or random when there are none;
``"none"`` = random; a file path; or an open_clip tag (works only when open_clip finds it cached
offline). Random weights come from a fixed seed so the same backbone loads identically every time,
which keeps its ``backbone_id`` stable (checkpoints are bound to it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from qc_stream.errors import ConfigError, QcError
from qc_stream.settings import DEFAULT_MODELS_DIR, SHIPPED_MODELS_DIR

# open_clip stays a function-local import (load_backbone and its weight loaders): importing it
# doubles this module's import time (2-3 s more on 2 cores), and readers of saved prompt versions
# (`qc-stream models list`, the registry, thresholds) import this module without building a backbone.

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "open_clip_config.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def _default_models_dir() -> Path:
    return DEFAULT_MODELS_DIR


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' requested but no CUDA GPU is available (use QC_DEVICE=cpu or auto)"
        )
    return dev


def autocast(device: str | torch.device, precision: str = "fp32"):
    """A context that runs the enclosed forward in ``precision`` ("fp32", "fp16", "bf16") on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise ConfigError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")
    return torch.autocast(device_type=torch.device(device).type, dtype=dtypes[precision])


def bf16_is_native(device: str | torch.device) -> bool:
    """Whether bf16 autocast pays on ``device``: always on a GPU; on a CPU only with AVX-512 BF16 or AMX.

    Elsewhere PyTorch emulates bf16 matmuls: on an AVX2-only EPYC (2026-11-27) a pretraining step of
    the tiny image tower took 11.6 s in bf16 against 1.06 s in fp32."""
    if torch.device(device).type != "cpu":
        return True
    # private probes (torch 2.x); a torch without them is taken as emulating bf16, the safe side
    probes = (
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return any(bool(probe()) for probe in probes if probe is not None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_state_dict(state: dict[str, torch.Tensor]) -> str:
    """A content hash of tensors (names, dtypes, shapes and bytes), independent of file format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(eq=False)
class Backbone:
    """A frozen open_clip CLIP (eval mode, ``requires_grad=False``) plus what is needed to feed it."""

    name: str
    model: Any  # open_clip.model.CLIP
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained: (
        str  # "none" (random, seeded), "shipped:<file>", a weights file path, or an open_clip tag
    )
    weights_path: Path | None = None
    seed: int = 0
    _sha256: str | None = field(default=None, repr=False)

    # --- architecture facts used by the prompt learners ---
    @property
    def visual(self):
        return self.model.visual

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def vision_width(self) -> int:
        return int(self.model.visual.conv1.out_channels)

    @property
    def vision_layers(self) -> int:
        return len(self.model.visual.transformer.resblocks)

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.patch_size[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.model.visual.grid_size)

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    def tap_layers(self, n: int = 4) -> list[int]:
        """Block indices (0-based) of ``n`` evenly spaced layers ending at the last: 24 layers -> 5, 11, 17, 23."""
        depth = self.vision_layers
        n = max(1, min(n, depth))
        return [round(depth * (j + 1) / n) - 1 for j in range(n)]

    # --- identity ---
    @property
    def weights_sha256(self) -> str:
        """sha256 of the weights file, or of the (seeded random) state dict; computed once, lazily."""
        if self._sha256 is None:
            if self.weights_path is not None:
                self._sha256 = sha256_file(self.weights_path)
            else:
                self._sha256 = sha256_state_dict(self.model.state_dict())
        return self._sha256

    @property
    def backbone_id(self) -> str:
        """``<name>@<first 8 hex of weights_sha256>``, e.g. ``qc-clip-tiny@1a2b3c4d``."""
        return f"{self.name}@{self.weights_sha256[:8]}"

    def info(self) -> dict:
        """What a prompt manifest records about the backbone."""
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "backbone_id": self.backbone_id,
            "weights_sha256": self.weights_sha256,
            "image_size": self.image_size,
        }

    def to(self, device: str | torch.device) -> Backbone:
        self.model.to(resolve_device(device))
        return self

    # --- inputs ---
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def preprocess(self, image) -> torch.Tensor:
        """One image -> normalised float tensor [3, S, S] (S = ``image_size``).

        Accepts a PIL image, a uint8 array HxWx3 (or HxW), or a float tensor [3,H,W] that is already
        normalised (only resized when its size differs). PIL/uint8: the whole frame resized bicubic to
        SxS (no crop, so a defect at the frame's edge stays in view, as in production and the
        reference), CLIP mean/std. Maps come back at SxS and are resized to the frame's own size.
        """
        s = self.image_size
        if isinstance(image, torch.Tensor):
            if image.dtype == torch.uint8:
                image = image.cpu().numpy()
                if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
                    image = image.transpose(1, 2, 0)
            else:
                if image.ndim != 3 or image.shape[0] != 3:
                    raise QcError(
                        f"expected an image tensor [3,H,W], got shape {tuple(image.shape)}"
                    )
                if tuple(image.shape[1:]) != (s, s):
                    image = F.interpolate(
                        image[None].float(), size=(s, s), mode="bicubic", align_corners=False
                    )[0]
                return image.float()

        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise QcError(f"expected a uint8 image array, got {image.dtype}")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise QcError(f"cannot use {type(image).__name__} as an image")
        image = image.convert("RGB")
        if image.size != (s, s):
            image = image.resize((s, s), Image.BICUBIC)
        arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (arr - mean) / std

    def preprocess_batch(self, images: Sequence) -> torch.Tensor:
        """Several images -> [B, 3, S, S] on the CPU."""
        return torch.stack([self.preprocess(im) for im in images])


def _find_weights(folder: Path) -> Path | None:
    preferred = folder / WEIGHTS_FILE
    if preferred.is_file():
        return preferred
    found = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    return found[0] if found else None


# What open_clip's Hugging Face repositories hold (e.g. timm/vit_large_patch14_clip_336.openai), in
# order of preference; any other weights file is taken only when it is the folder's only one.
_OPEN_CLIP_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def weights_in_folder(folder: Path) -> Path:
    """The one open_clip weights file under ``folder`` (a copied Hugging Face / open_clip cache, or a
    folder holding the file); ``ConfigError`` naming the candidates when there are none or several."""
    for name in _OPEN_CLIP_WEIGHT_NAMES:
        found = sorted(folder.rglob(name))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigError(
                f"{folder}: several {name} files ({', '.join(str(f) for f in found[:3])}); "
                "give --pretrained the file itself"
            )
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            f"{folder}: no open_clip weights file (.safetensors, .bin, .pth, .pt) in it"
        )
    raise ConfigError(
        f"{folder}: several weights files ({', '.join(str(f) for f in found[:3])}); "
        "give --pretrained the file itself"
    )


def _resolve_folder(name: str, models_dir: Path) -> Path | None:
    # The shipped backbones are read in place: a models folder need not hold copies of them.
    candidates = [
        models_dir / "backbones" / name,
        SHIPPED_MODELS_DIR / "backbones" / name,
        Path(name),
    ]
    for c in candidates:
        if (c / CONFIG_FILE).is_file():
            return c
    return None


@contextlib.contextmanager
def _seeded(seed: int):
    # open_clip logs expected conditions ("initialized randomly") as root-logger warnings; hush them.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        logging.disable(previous)


def _load_weights(model, path: Path) -> None:
    import open_clip

    if not path.is_file():
        raise ConfigError(f"backbone weights not found: {path}")
    try:
        if _pos_grid_differs(model, path):
            _load_resized(model, path)
        else:
            open_clip.load_checkpoint(model, str(path), strict=True)
    except Exception as e:  # a wrong file for this architecture is a user error
        raise ConfigError(
            f"cannot load backbone weights {path}: {str(e).splitlines()[0][:300]}"
        ) from None


def _pos_grid_differs(model, path: Path) -> bool:
    """True when the weights' positional embedding has another grid than the model (image_size set)."""
    if path.suffix != ".safetensors":
        return False
    with safe_open(str(path), framework="pt") as f:
        key = "visual.positional_embedding"
        return key in f.keys() and tuple(f.get_slice(key).get_shape()) != tuple(
            model.visual.positional_embedding.shape
        )


def _load_resized(model, path: Path) -> None:
    """Load fp16 safetensors weights into a model built for another image size: open_clip's bicubic
    positional-embedding interpolation is not implemented for fp16 on the CPU, so cast to fp32 first."""
    from open_clip.model import resize_pos_embed

    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    resize_pos_embed(state, model)
    model.load_state_dict(state, strict=True)


def _describe_weights(requested: str | None, weights_path: Path | None, tag: str | None) -> str:
    """What the manifest records as ``pretrained``: "shipped:<file>", a file path, a tag, or "none"."""
    if weights_path is not None:
        return f"shipped:{weights_path.name}" if requested in (None, "") else str(weights_path)
    return tag or "none"


def load_backbone(
    name: str,
    pretrained: str | None = None,
    image_size: int | None = None,
    models_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Backbone:
    """Build a frozen open_clip backbone offline. See the module docstring for ``name``/``pretrained``.

    ``image_size`` overrides the config's input size; learned positional embeddings are interpolated
    (open_clip's ``resize_pos_embed``), e.g. ``ViT-L-14-336-quickgelu`` at 518.
    """
    import open_clip

    models_dir = Path(models_dir) if models_dir is not None else _default_models_dir()
    if pretrained not in (None, "", "none") and Path(pretrained).is_dir():
        pretrained = str(weights_in_folder(Path(pretrained)))
    folder = _resolve_folder(name, models_dir)
    weights_path: Path | None = None
    tag: str | None = None
    with _seeded(seed):
        if folder is not None:
            try:
                cfg = json.loads((folder / CONFIG_FILE).read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{folder / CONFIG_FILE}: not valid JSON ({e.msg})") from None
            if "model_cfg" not in cfg:
                raise ConfigError(
                    f"{folder / CONFIG_FILE}: expected open_clip's local-dir format "
                    '{"model_cfg": {...}, "preprocess_cfg": {...}}'
                )
            if pretrained in (None, ""):
                weights_path = _find_weights(folder)
            elif pretrained != "none":
                weights_path = Path(pretrained)
                if not weights_path.is_file():
                    raise ConfigError(
                        f"pretrained={pretrained!r}: not a weights file (a backbone folder takes a file path, "
                        "'none', or nothing for its shipped weights)"
                    )
            try:
                model = open_clip.create_model(
                    f"local-dir:{folder.resolve()}", load_weights=False, force_image_size=image_size
                )
                tokenizer = open_clip.get_tokenizer(f"local-dir:{folder.resolve()}")
            except Exception as e:
                raise ConfigError(
                    f"cannot build backbone from {folder}: {str(e).splitlines()[0][:300]}"
                ) from None
            display_name = folder.name
        else:
            if name not in open_clip.list_models():
                raise ConfigError(
                    f"unknown backbone {name!r}: not a folder under {models_dir / 'backbones'} "
                    "and not an open_clip architecture (see open_clip.list_models())"
                )
            if pretrained not in (None, "", "none"):
                if Path(pretrained).is_file():
                    weights_path = Path(pretrained)
                elif pretrained in open_clip.list_pretrained_tags_by_model(name):
                    tag = pretrained
                else:
                    raise ConfigError(
                        f"pretrained={pretrained!r} is neither a file nor an open_clip tag of {name} "
                        f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'})"
                    )
            try:
                model = open_clip.create_model(name, pretrained=tag, force_image_size=image_size)
            except Exception as e:
                raise ConfigError(
                    f"cannot build backbone {name} (pretrained={pretrained!r}); tags only work when the "
                    f"weights are already cached offline: {str(e).splitlines()[0][:300]}"
                ) from None
            tokenizer = open_clip.get_tokenizer(name)
            display_name = name
        if weights_path is not None:
            _load_weights(model, weights_path)

    from open_clip.transformer import VisionTransformer

    if not isinstance(model.visual, VisionTransformer) or not hasattr(model, "token_embedding"):
        raise ConfigError(
            f"backbone {name}: DAPO needs an open_clip ViT with the built-in text tower"
        )
    if model.visual.attn_pool is not None or model.visual.pool_type != "tok":
        raise ConfigError(f"backbone {name}: DAPO needs CLS-token pooling (no attentional pooler)")

    model.eval()
    model.requires_grad_(False)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = model.visual.image_size
    bb = Backbone(
        name=display_name,
        model=model,
        tokenizer=tokenizer,
        image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
        mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
        pretrained=_describe_weights(pretrained, weights_path, tag),
        weights_path=weights_path,
        seed=seed,
    )
    return bb.to(device)
