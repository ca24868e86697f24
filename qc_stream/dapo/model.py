"""DAPO: hybrid defect-aware prompts + deep text/visual prompts + per-layer adapters on a frozen CLIP.

``DapoModel.forward(images, words, candidate_mask)`` answers, per image: is it anomalous
(``image_score``), where (``anomaly_map``), and which defect type (``type_map_probs`` per pixel,
``image_type_probs`` per image). ``words`` are plain defect words, so a new one works zero-shot.

The scoring (``PromptDetector``) is shared with the baselines, so every method produces the same
outputs the same way and differs only in how it builds text and patch features.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from qc_stream.dapo.backbone import Backbone
from qc_stream.dapo.prompts import PromptLearner
from qc_stream.dapo.visual import VisualEncoder, VisualFeatures
from qc_stream.errors import InputError, QcError

TEXT_CACHE_SIZE = 32
# One lock for every model's text cache (a lock attribute would make models impossible to deepcopy);
# held only around dict operations, never while encoding.
_CACHE_LOCK = threading.Lock()


@dataclass
class DapoConfig:
    """Architecture and scoring settings of a DAPO model (saved in the prompt manifest)."""

    n_ctx: int = 5  # learnable context vectors per prompt (l)
    n_copies: int = 10  # K-copy context ensemble
    n_deep_text: int = 4  # deep text prompt tokens per layer (0 = off)
    n_deep_visual: int = 4  # deep visual prompt tokens per layer (0 = off)
    alpha: float = 0.01  # residual blending of deep prompts at layers >= 1
    n_taps: int = 4  # evenly spaced ViT layers whose patch tokens are scored
    temperature: float = 0.07
    normal_suffix: str = "flawless object"
    abnormal_template: str = "{} anomaly object"
    cls_type_weight: float = (
        0.5  # per-image type = (1-w) * region distribution + w * CLS distribution
    )
    smooth_sigma: float = 0.0  # Gaussian smoothing of the anomaly map, in output pixels (0 = off)


@dataclass
class TextFeatures:
    normal: torch.Tensor  # [E] unit
    abnormal: torch.Tensor  # [C, E] unit; C = N (type-aware) or 1 (generic)
    types: torch.Tensor  # [N, E] unit, one per defect word


@dataclass
class DapoOutput:
    """What every detector returns for a batch. Maps are at the input image size."""

    image_score: torch.Tensor  # [B] probability of "abnormal", 0..1
    anomaly_map: torch.Tensor  # [B, H, W] 0..1 (mean over tapped layers of 1 - p(normal))
    # [B, N, H, W] layer-averaged per-type abnormal probability; sums to the unsmoothed anomaly map
    type_map_probs: torch.Tensor
    image_type_probs: torch.Tensor  # [B, N] distribution over the (candidate) defect words
    words: list[str]
    candidate_mask: torch.Tensor  # [B, N] bool
    # training internals (what the losses need)
    image_logits: torch.Tensor  # [B, 2] logits of [normal, abnormal]
    layer_logits: list[torch.Tensor] = field(
        default_factory=list
    )  # per tapped layer [B, 1+C, gh, gw]

    @property
    def type_map(self) -> torch.Tensor:
        """[B, H, W] index into ``words`` of the most likely defect type per pixel."""
        return self.type_map_probs.argmax(dim=1)

    @property
    def image_type(self) -> torch.Tensor:
        """[B] index into ``words`` of the most likely defect type per image."""
        return self.image_type_probs.argmax(dim=1)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, H, W] maps (reflect padding)."""
    if sigma <= 0:
        return maps
    h, w = maps.shape[-2:]
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, w - 1, h - 1)
    # Two matrix products with the 1-D kernel (and the reflect padding) folded into banded [n, n]
    # matrices: the same separable convolution, ~10x faster on the CPU than oneDNN's convolution of
    # one-channel maps (which was most of DAPO's forward on the tiny backbone).
    rows = _blur_matrix(h, radius, float(sigma), maps.device, maps.dtype)
    cols = _blur_matrix(w, radius, float(sigma), maps.device, maps.dtype)
    return torch.matmul(rows.t(), torch.matmul(maps, cols))


_BLUR_MATRICES: OrderedDict = OrderedDict()
_BLUR_LOCK = threading.Lock()


def _blur_matrix(n: int, radius: int, sigma: float, device, dtype) -> torch.Tensor:
    """[n, n] M with (x @ M)[j] = sum_t k[t] x[reflect(j + t - radius)], k the normalised Gaussian
    of ``sigma`` over -radius..radius (blurs the last axis; M^T @ x blurs the one before). Not
    symmetric near the edges, where the reflected taps land. Cached per shape, device and dtype."""
    key = (n, radius, sigma, str(device), dtype)
    with _BLUR_LOCK:
        m = _BLUR_MATRICES.get(key)
    if m is None:
        xs = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-(xs**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        j = torch.arange(n).view(-1, 1)  # output position
        i = j + torch.arange(-radius, radius + 1).view(1, -1)  # input position before reflection
        i = torch.where(i < 0, -i, i)
        i = torch.where(i >= n, 2 * (n - 1) - i, i)
        m = torch.zeros(n, n, dtype=torch.float64)
        m.index_put_((i.reshape(-1), j.expand_as(i).reshape(-1)), kernel.repeat(n), accumulate=True)
        m = m.to(device=device, dtype=dtype)
        with _BLUR_LOCK:
            _BLUR_MATRICES[key] = m
            while len(_BLUR_MATRICES) > 16:
                _BLUR_MATRICES.popitem(last=False)
    return m


def check_words(words: Sequence[str] | None) -> list[str]:
    if words is None or len(words) == 0:
        raise InputError("at least one defect word is needed")
    out = []
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise InputError(f"defect words must be non-empty strings, got {w!r}")
        out.append(w.strip())
    lowered = [w.casefold() for w in out]
    if len(set(lowered)) != len(lowered):
        raise InputError(f"duplicate defect words: {out}")
    return out


class PromptDetector(nn.Module):
    """Shared scoring for DAPO and the baselines.

    Subclasses provide ``visual`` (a ``VisualEncoder``), ``encode_text(words) -> TextFeatures`` and
    ``param_groups()``. ``type_aware`` says whether the abnormal classes are the defect words (DAPO)
    or one generic "abnormal" class (baselines, which name types with frozen hand-crafted prompts).
    """

    method: ClassVar[str] = "base"
    type_aware: ClassVar[bool] = False

    def __init__(self, backbone: Backbone, config, vocabulary: Sequence[str] | None = None):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.clip = (
            backbone.model
        )  # submodule so .to(device) moves it; frozen, never saved with prompts
        self.vocabulary: list[str] = list(vocabulary or [])
        self.product_words: dict[str, list[str]] = {}
        self._text_cache: OrderedDict = OrderedDict()

    # --- to be provided by subclasses ---
    visual: VisualEncoder

    def encode_text(self, words: list[str]) -> TextFeatures:
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by stage group: text_context, deep_text, adapters, deep_visual."""
        return {}

    # --- module plumbing ---
    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # the backbone stays in eval mode (no dropout / patch dropout), always
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for group in self.param_groups().values() for p in group]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The prompt weights only (no backbone tensor), as saved in ``prompts.safetensors``."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise QcError(
                f"prompt weights do not fit this {self.method} model "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise QcError(
                    f"prompt weight {k}: shape {tuple(v.shape)} does not fit {tuple(own[k].shape)}"
                )
        self.load_state_dict(state, strict=False)
        self.invalidate_text_cache()

    def config_dict(self) -> dict:
        return asdict(self.config)

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    # --- text features, cached per (prompt parameter version, words) ---
    def _text_version(self) -> tuple:
        params = self.param_groups()
        text = params.get("text_context", []) + params.get("deep_text", [])
        return tuple((id(p), p._version) for p in text)

    def _text_needs_grad(self) -> bool:
        params = self.param_groups()
        return torch.is_grad_enabled() and any(
            p.requires_grad for p in params.get("text_context", []) + params.get("deep_text", [])
        )

    def invalidate_text_cache(self) -> None:
        with _CACHE_LOCK:
            self._text_cache.clear()

    def text_features(self, words: Sequence[str]) -> TextFeatures:
        """Text features for ``words``; computed once per prompt version (parameter change) and word list."""
        words = check_words(words)
        if self._text_needs_grad():
            return self.encode_text(words)
        dev = self.device.type
        amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        key = (tuple(words), str(self.device), amp, self._text_version())
        with _CACHE_LOCK:
            hit = self._text_cache.get(key)
            if hit is not None:
                self._text_cache.move_to_end(key)
                return hit
        # normal tensors even when called under inference_mode, so a cached entry can later meet
        # autograd (training the visual side only reuses the cached text features)
        with torch.inference_mode(False), torch.no_grad():
            feats = self.encode_text(words)
        feats = TextFeatures(
            *(t.detach().float() for t in (feats.normal, feats.abnormal, feats.types))
        )
        with _CACHE_LOCK:
            self._text_cache[key] = feats
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return feats

    # --- candidates ---
    def candidate_mask(
        self, products: Sequence[str | None], words: Sequence[str] | None = None
    ) -> torch.Tensor:
        """[B, N] bool: for a known product, only its registered words (``product_words``); else all."""
        words = list(words) if words is not None else self.vocabulary
        index = {w.casefold(): i for i, w in enumerate(words)}
        mask = torch.ones(len(products), len(words), dtype=torch.bool)
        for b, product in enumerate(products):
            allowed = self.product_words.get(product) if product is not None else None
            if allowed:
                row = torch.zeros(len(words), dtype=torch.bool)
                for w in allowed:
                    if w.casefold() in index:
                        row[index[w.casefold()]] = True
                if bool(row.any()):
                    mask[b] = row
        return mask

    # --- forward ---
    def forward(
        self,
        images: torch.Tensor,
        words: Sequence[str] | None = None,
        candidate_mask: torch.Tensor | None = None,
    ) -> DapoOutput:
        """Score a batch of normalised images [B, 3, H, W] against defect ``words`` (default: the
        model's vocabulary). ``candidate_mask`` [B, N] restricts the defect types per image."""
        words = check_words(words if words is not None else self.vocabulary)
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        b, _, h, w = images.shape
        n = len(words)
        device = self.device
        images = images.to(device)
        size = self.backbone.image_size
        if (h, w) != (size, size):
            images = F.interpolate(
                images.float(), size=(size, size), mode="bicubic", align_corners=False
            )
        if candidate_mask is None:
            cand = torch.ones(b, n, dtype=torch.bool, device=device)
        else:
            cand = candidate_mask.to(device=device, dtype=torch.bool)
            if tuple(cand.shape) != (b, n):
                raise InputError(f"candidate_mask must be [{b}, {n}], got {tuple(cand.shape)}")
            if not bool(cand.any(dim=1).all()):
                raise InputError("every image needs at least one candidate defect word")

        text = self.text_features(words)
        feats: VisualFeatures = self.visual(images)
        # scores and maps in fp32 even under fp16/bf16 autocast (softmax over 1/0.07-scaled cosines)
        with torch.autocast(device_type=device.type, enabled=False):
            return self._score(feats, text, words, cand, (h, w))

    def _score(
        self, feats: VisualFeatures, text: TextFeatures, words: list[str], cand: torch.Tensor, size
    ) -> DapoOutput:
        h, w = size
        b, n = cand.shape
        device = cand.device
        tau = self.config.temperature
        t_normal, t_abnormal, t_types = (
            text.normal.float(),
            text.abnormal.float(),
            text.types.float(),
        )
        candf = cand.float()

        # image score: [normal, mean of the (candidate) abnormal prompts]
        g = F.normalize(feats.global_feature.float(), dim=-1)
        if self.type_aware:
            mean_abn = F.normalize(
                (candf @ t_abnormal) / candf.sum(1, keepdim=True), dim=-1
            )  # [B, E]
        else:
            mean_abn = t_abnormal[0].expand(b, -1)
        image_logits = torch.stack([g @ t_normal, (g * mean_abn).sum(-1)], dim=-1) / tau
        image_score = image_logits.softmax(-1)[:, 1]

        # per layer (1+C)-way softmax over patches
        gh, gw = feats.grid
        classes = torch.cat([t_normal[None], t_abnormal], dim=0)  # [1+C, E]
        if self.type_aware:
            class_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=device), cand], dim=1)
        layer_logits, prob_sum = [], None
        for patches in feats.patch_features:
            f = F.normalize(patches.float(), dim=-1)  # [B, HW, E]
            logits = f @ classes.t() / tau  # [B, HW, 1+C]
            if self.type_aware:
                logits = logits.masked_fill(~class_mask[:, None, :], float("-inf"))
            logits = logits.transpose(1, 2).reshape(b, -1, gh, gw)
            layer_logits.append(logits)
            probs = logits.softmax(dim=1)
            prob_sum = probs if prob_sum is None else prob_sum + probs
        probs = prob_sum / len(layer_logits)  # [B, 1+C, gh, gw]
        abnormal_grid = 1 - probs[:, 0]  # [B, gh, gw]

        if self.type_aware:
            type_grid = probs[:, 1:]  # [B, N, gh, gw]
        else:
            # generic abnormal probability split over types by frozen per-word prompts (final layer)
            f = F.normalize(feats.patch_features[-1].float(), dim=-1)
            type_logits = (f @ t_types.t() / tau).masked_fill(~cand[:, None, :], float("-inf"))
            type_dist = type_logits.softmax(-1).transpose(1, 2).reshape(b, n, gh, gw)
            type_grid = type_dist * abnormal_grid[:, None]

        # per image type: dominant type over the anomalous region, blended with the CLS distribution
        region = (type_grid * abnormal_grid[:, None]).flatten(2).sum(-1)  # [B, N]
        region = region.masked_fill(~cand, 0)
        total = region.sum(1, keepdim=True)
        uniform = candf / candf.sum(1, keepdim=True)
        region = torch.where(total > 1e-12, region / total.clamp_min(1e-12), uniform)
        cls_logits = (g @ t_types.t() / tau).masked_fill(~cand, float("-inf"))
        cls_dist = cls_logits.softmax(-1)
        wcls = self.config.cls_type_weight
        image_type_probs = (1 - wcls) * region + wcls * cls_dist

        type_map_probs = F.interpolate(type_grid, size=(h, w), mode="bilinear", align_corners=False)
        anomaly_map = F.interpolate(
            abnormal_grid[:, None], size=(h, w), mode="bilinear", align_corners=False
        )[:, 0]
        sigma = self.config.smooth_sigma
        anomaly_map = gaussian_blur(anomaly_map, sigma).clamp(0, 1)
        if sigma > 0:  # the same (linear) blur keeps the per-type maps summing to the anomaly map
            type_map_probs = gaussian_blur(type_map_probs.flatten(0, 1), sigma).view_as(
                type_map_probs
            )
        return DapoOutput(
            image_score=image_score,
            anomaly_map=anomaly_map,
            type_map_probs=type_map_probs,
            image_type_probs=image_type_probs,
            words=words,
            candidate_mask=cand,
            image_logits=image_logits,
            layer_logits=layer_logits,
        )


class DapoModel(PromptDetector):
    """DAPO over a frozen backbone: hybrid prompts ``[W1..Wl] <word> anomaly object`` /
    ``[V1..Vl] flawless object`` (K-copy ensemble), deep text and visual prompts, per-layer adapters."""

    method: ClassVar[str] = "dapo"
    type_aware: ClassVar[bool] = True

    def __init__(
        self,
        backbone: Backbone,
        config: DapoConfig | None = None,
        vocabulary: Sequence[str] | None = None,
    ):
        config = config or DapoConfig()
        super().__init__(backbone, config, vocabulary)
        self.prompts = PromptLearner.from_config(backbone, config)
        self.visual = VisualEncoder(
            backbone,
            n_prompts=config.n_deep_visual,
            alpha=config.alpha,
            n_taps=config.n_taps,
            adapters=True,
        )
        self.to(backbone.device)

    def encode_text(self, words: list[str]) -> TextFeatures:
        normal, abnormal = self.prompts(words)
        return TextFeatures(normal=normal, abnormal=abnormal, types=abnormal)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "text_context": self.prompts.context_parameters(),
            "deep_text": self.prompts.deep_parameters(),
            "adapters": self.visual.adapter_parameters(),
            "deep_visual": self.visual.prompt_parameters(),
        }
