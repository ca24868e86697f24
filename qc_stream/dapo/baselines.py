"""Baselines on the same backbone and with the same outputs as DAPO (for the benchmark table).

- ``HandcraftedBaseline`` (WinCLIP-style, no training): normal/anomalous state phrases x photo
  templates, averaged into one normal and one anomalous text feature. Patches are scored against the
  final-layer patch tokens passed through CLIP's own ``ln_post`` and projection (WinCLIP's window
  aggregation of CLS features is not done: one forward per image keeps it as fast as DAPO, and the
  per-patch variant is what the same ``forward`` can produce at every size; documented in docs/dapo.md).
- ``AgnosticBaseline`` (AnomalyCLIP-style): learned ``[X x 12] object`` / ``[X x 12] damaged object``
  with deep text prompts and no defect words, scored on the same 4 tapped layers through the frozen
  projection (no adapters, no visual prompts). Trainable with the same ``train()``.

Neither method knows defect types, yet the shared output has per-type maps: both split their
anomaly probability over the words with frozen hand-crafted per-word prompts (``type_prompts``), the
honest zero-shot way a CLIP user would name a type without DAPO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from qc_stream.dapo.backbone import Backbone
from qc_stream.dapo.model import DapoConfig, DapoModel, PromptDetector, TextFeatures
from qc_stream.dapo.prompts import PromptLearner, encode_texts
from qc_stream.dapo.visual import VisualEncoder
from qc_stream.errors import QcError

NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
PHOTO_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a jpeg corrupted photo of a {}.",
    "a good photo of the {}.",
    "a photo of the {} for inspection.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for anomaly detection.",
    "there is a {} in the scene.",
    "this is a {} in the scene.",
    "this is one {} in the scene.",
)
TYPE_STATES = ("{obj} with {word}", "{word} on the {obj}", "{word} defect on {obj}")
TYPE_TEMPLATES = PHOTO_TEMPLATES[:5]


def _mean_feature(backbone: Backbone, texts: Sequence[str]) -> torch.Tensor:
    return F.normalize(encode_texts(backbone, texts).mean(0), dim=-1)


def type_prompts(
    backbone: Backbone, words: Sequence[str], object_name: str = "object"
) -> torch.Tensor:
    """Frozen hand-crafted feature per defect word [N, E] (state phrases x a few templates, averaged)."""
    feats = []
    for word in words:
        texts = [
            t.format(s.format(obj=object_name, word=word))
            for s in TYPE_STATES
            for t in TYPE_TEMPLATES
        ]
        feats.append(_mean_feature(backbone, texts))
    return torch.stack(feats)


@dataclass
class HandcraftedConfig:
    object_name: str = "object"
    temperature: float = 0.07
    cls_type_weight: float = 0.5
    smooth_sigma: float = 0.0


class HandcraftedBaseline(PromptDetector):
    """WinCLIP-style hand-crafted prompt ensemble; nothing to train."""

    method: ClassVar[str] = "handcrafted"
    type_aware: ClassVar[bool] = False

    def __init__(
        self,
        backbone: Backbone,
        config: HandcraftedConfig | None = None,
        vocabulary: Sequence[str] | None = None,
    ):
        config = config or HandcraftedConfig()
        super().__init__(backbone, config, vocabulary)
        last = backbone.vision_layers - 1
        self.visual = VisualEncoder(backbone, n_prompts=0, adapters=False, taps=[last])
        self._state_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.to(backbone.device)

    def encode_text(self, words: list[str]) -> TextFeatures:
        obj = self.config.object_name
        if self._state_features is None or self._state_features[0].device != self.device:
            normal = _mean_feature(
                self.backbone,
                [t.format(s.format(obj)) for s in NORMAL_STATES for t in PHOTO_TEMPLATES],
            )
            abnormal = _mean_feature(
                self.backbone,
                [t.format(s.format(obj)) for s in ANOMALOUS_STATES for t in PHOTO_TEMPLATES],
            )
            self._state_features = (normal, abnormal)
        normal, abnormal = self._state_features
        return TextFeatures(
            normal=normal, abnormal=abnormal[None], types=type_prompts(self.backbone, words, obj)
        )

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {}


@dataclass
class AgnosticConfig:
    n_ctx: int = 12
    n_copies: int = 1
    n_deep_text: int = 4
    # AnomalyCLIP's deep text prompts: learned tokens in layers 0-8 that *replace* the previous
    # layer's output (alpha 0, no blending); None = every layer (versions saved before this).
    deep_text_depth: int | None = 9
    alpha: float = 0.0
    n_taps: int = 4
    temperature: float = 0.07
    normal_suffix: str = "object"
    abnormal_template: str = "damaged object"
    object_name: str = "object"  # for the frozen per-word type prompts
    cls_type_weight: float = 0.5
    smooth_sigma: float = 4.0  # AnomalyCLIP smooths its maps with a Gaussian of sigma 4
    # DPAM: V-V attention path in the last blocks (-1: AnomalyCLIP's 19 of 24, scaled to the
    # backbone's depth; 0: off, as in versions saved before DPAM was added)
    dpam_layers: int = -1


def dpam_start(config: AgnosticConfig, depth: int) -> int | None:
    """0-based first block of the DPAM path, or None when it is off."""
    n = round(depth * 19 / 24) if config.dpam_layers < 0 else min(config.dpam_layers, depth)
    return None if n <= 0 else depth - n


class AgnosticBaseline(PromptDetector):
    """AnomalyCLIP-style object-agnostic learned prompts (no defect words in the learned part)."""

    method: ClassVar[str] = "agnostic"
    type_aware: ClassVar[bool] = False

    def __init__(
        self,
        backbone: Backbone,
        config: AgnosticConfig | None = None,
        vocabulary: Sequence[str] | None = None,
    ):
        config = config or AgnosticConfig()
        if "{}" in config.abnormal_template:
            raise QcError(
                "the object-agnostic baseline takes no defect word in its abnormal prompt"
            )
        super().__init__(backbone, config, vocabulary)
        self.prompts = PromptLearner.from_config(backbone, config)
        self.visual = VisualEncoder(
            backbone,
            n_prompts=0,
            n_taps=config.n_taps,
            adapters=False,
            dpam_from=dpam_start(config, backbone.vision_layers),
        )
        self._type_cache: dict[tuple, torch.Tensor] = {}
        self.to(backbone.device)

    def encode_text(self, words: list[str]) -> TextFeatures:
        normal, abnormal = self.prompts(words)
        key = (tuple(words), str(self.device))
        if key not in self._type_cache:
            if len(self._type_cache) > 32:
                self._type_cache.clear()
            with torch.no_grad():
                self._type_cache[key] = type_prompts(self.backbone, words, self.config.object_name)
        return TextFeatures(normal=normal, abnormal=abnormal, types=self._type_cache[key])

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "text_context": self.prompts.context_parameters(),
            "deep_text": self.prompts.deep_parameters(),
            "adapters": [],
            "deep_visual": [],
        }


METHODS: dict[str, type[PromptDetector]] = {}


def _register() -> None:
    METHODS.update(
        {"dapo": DapoModel, "handcrafted": HandcraftedBaseline, "agnostic": AgnosticBaseline}
    )
    CONFIGS.update(
        {"dapo": DapoConfig, "handcrafted": HandcraftedConfig, "agnostic": AgnosticConfig}
    )


CONFIGS: dict[str, type] = {}
_register()


def build_model(
    method: str,
    backbone: Backbone,
    config: dict | None = None,
    vocabulary: Sequence[str] | None = None,
) -> PromptDetector:
    """Construct a detector by method name ("dapo", "handcrafted", "agnostic") from a config dict."""
    if method not in METHODS:
        raise QcError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    cfg_cls = CONFIGS[method]
    known = set(cfg_cls.__dataclass_fields__)
    cfg = cfg_cls(**{k: v for k, v in (config or {}).items() if k in known})
    return METHODS[method](backbone, cfg, vocabulary)
