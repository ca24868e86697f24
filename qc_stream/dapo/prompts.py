"""Text side: learnable prompt contexts and deep text prompts over the frozen open_clip text tower.

A prompt is ``[SOT] [ctx_1..ctx_l] <suffix words> [EOT]``: the context vectors are learned (K copies,
averaged after encoding), the suffix is ordinary tokenized text ("scratch anomaly object",
"flawless object"). Deep text prompts add ``n`` learned tokens after SOT at layer 0 and re-blend the
same slots at every later layer: ``alpha * previous_output + (1 - alpha) * learned_i``.

The text tower runs with its causal mask, and the feature is pooled at the true EOT position
(shifted right by the inserted context and deep tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qc_stream.dapo.backbone import Backbone
from qc_stream.errors import QcError


def token_embedding_stats(backbone: Backbone) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the token-embedding table (initialises the contexts)."""
    table = backbone.model.token_embedding.weight.detach().float().cpu()
    return table.mean(0), table.std(0)


def _project_text(clip, pooled: torch.Tensor) -> torch.Tensor:
    proj = clip.text_projection
    if proj is None:
        return pooled
    if isinstance(proj, nn.Linear):
        return proj(pooled)
    return pooled @ proj


def encode_token_embeddings(
    backbone: Backbone,
    x: torch.Tensor,
    eot: torch.Tensor,
    deep: torch.Tensor | None = None,
    alpha: float = 0.01,
) -> torch.Tensor:
    """Run the frozen text tower on token embeddings; return projected features [P, E] (not normalised).

    ``x`` [P, L0, W] holds SOT at position 0 and ``L0 = context_length - n_deep``; ``eot`` [P] is the
    EOT position in ``x``. ``deep`` [layers, n, W] (optional) are the deep text prompts.
    """
    clip = backbone.model
    n = 0 if deep is None else deep.shape[1]
    p = x.shape[0]
    if n:
        x = torch.cat(
            [x[:, :1], deep[0].to(x.dtype).unsqueeze(0).expand(p, -1, -1), x[:, 1:]], dim=1
        )
    length = x.shape[1]
    if length > backbone.context_length:
        raise QcError(
            f"prompt of {length} tokens exceeds the text context of {backbone.context_length}"
        )
    x = x + clip.positional_embedding[:length].to(x.dtype)
    mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
    transformer = clip.transformer
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        if i > 0 and n and i < deep.shape[0]:
            slots = x[:, 1 : 1 + n] if transformer.batch_first else x[1 : 1 + n]
            blended = alpha * slots + (1 - alpha) * deep[i].to(slots.dtype).unsqueeze(
                0 if transformer.batch_first else 1
            )
            if transformer.batch_first:
                x = torch.cat([x[:, :1], blended, x[:, 1 + n :]], dim=1)
            else:
                x = torch.cat([x[:1], blended, x[1 + n :]], dim=0)
        x = block(x, attn_mask=mask)
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    x = clip.ln_final(x)
    pooled = x[torch.arange(p, device=x.device), eot.to(x.device) + n]
    return _project_text(clip, pooled)


class SuffixTokens:
    """Tokenized suffixes ("scratch anomaly object") laid out after ``n_ctx`` context slots."""

    def __init__(self, backbone: Backbone, suffixes: Sequence[str], n_ctx: int, n_deep: int):
        ids = backbone.tokenize(suffixes)  # [S, C]: SOT, suffix tokens, EOT, zeros
        eot = ids.argmax(dim=-1)  # EOT has the largest id in the vocabulary
        length = backbone.context_length - n_deep
        too_long = (eot + n_ctx) >= length
        if bool(too_long.any()):
            bad = [s for s, t in zip(suffixes, too_long.tolist()) if t]
            raise QcError(
                f"prompt text too long for the text context ({backbone.context_length} tokens): {bad[0]!r}"
            )
        laid = torch.zeros(len(suffixes), length, dtype=ids.dtype)
        laid[:, 0] = ids[:, 0]
        laid[:, 1 + n_ctx :] = ids[:, 1 : length - n_ctx]
        # Under the causal mask nothing after EOT reaches the pooled EOT feature: drop the padding
        # tail (prompts are ~15 of 32..77 positions, so the text tower runs 2-5x less).
        laid = laid[:, : int((eot + n_ctx).max()) + 1]
        self.ids = laid
        self.eot = eot + n_ctx
        self.n_ctx = n_ctx


def encode_with_context(
    backbone: Backbone,
    ctx: torch.Tensor,
    suffix: SuffixTokens,
    deep: torch.Tensor | None,
    alpha: float,
) -> torch.Tensor:
    """Encode every suffix with each of the K context copies ``ctx`` [K, l, W]; average the K unit
    features; return unit features [S, E]."""
    clip = backbone.model
    device = clip.token_embedding.weight.device
    ids = suffix.ids.to(device)
    emb = clip.token_embedding(ids)  # [S, L0, W]
    k, n_ctx, width = ctx.shape
    s, l0 = ids.shape
    sot = emb[:, :1].unsqueeze(0).expand(k, -1, -1, -1)
    rest = emb[:, 1 + n_ctx :].unsqueeze(0).expand(k, -1, -1, -1)
    ctxs = ctx.to(emb.dtype).unsqueeze(1).expand(-1, s, -1, -1)
    x = torch.cat([sot, ctxs, rest], dim=2).reshape(k * s, l0, width)
    eot = suffix.eot.to(device).repeat(k)
    feats = encode_token_embeddings(backbone, x, eot, deep, alpha).float()
    feats = F.normalize(feats, dim=-1).view(k, s, -1).mean(0)
    return F.normalize(feats, dim=-1)


def encode_texts(backbone: Backbone, texts: Sequence[str]) -> torch.Tensor:
    """Plain frozen-CLIP unit text features [T, E] (hand-crafted prompts)."""
    ids = backbone.tokenize(texts).to(backbone.device)
    return F.normalize(backbone.model.encode_text(ids).float(), dim=-1)


class PromptLearner(nn.Module):
    """Learned normal/abnormal contexts (K copies each) + deep text prompts.

    ``abnormal_suffixes(words)`` decides the abnormal prompts: DAPO uses one per defect word
    ("<word> anomaly object"); the object-agnostic baseline uses one generic "damaged object".
    """

    def __init__(
        self,
        backbone: Backbone,
        n_ctx: int,
        n_copies: int,
        n_deep: int,
        alpha: float,
        normal_suffix: str,
        abnormal_template: str,
        deep_depth: int | None = None,
    ):
        super().__init__()
        if n_ctx < 1 or n_copies < 1 or n_deep < 0:
            raise QcError("prompt learner needs n_ctx >= 1, n_copies >= 1, n_deep >= 0")
        self.backbone = backbone  # plain attribute: not a submodule, never saved with the prompts
        self.n_ctx, self.n_copies, self.n_deep, self.alpha = n_ctx, n_copies, n_deep, alpha
        self.normal_suffix = normal_suffix
        self.abnormal_template = abnormal_template
        mean, std = token_embedding_stats(backbone)
        width = backbone.text_width
        self.ctx_normal = nn.Parameter(mean + std * torch.randn(n_copies, n_ctx, width))
        self.ctx_abnormal = nn.Parameter(mean + std * torch.randn(n_copies, n_ctx, width))
        if n_deep:
            # rows = layers that get learned tokens (layer 0 inserts them, later rows blend/replace
            # them); None = every layer. AnomalyCLIP-style prompts stop after layer 8 (depth 9).
            depth = (
                backbone.text_layers
                if deep_depth is None
                else min(deep_depth, backbone.text_layers)
            )
            deep = torch.randn(max(depth, 1), n_deep, width) * 0.02
            deep[0] = mean + std * torch.randn(
                n_deep, width
            )  # layer 0 lives in token-embedding space
            self.deep_text = nn.Parameter(deep)
        else:
            self.register_parameter("deep_text", None)
        self._suffix_cache: dict[tuple[str, ...], SuffixTokens] = {}

    @classmethod
    def from_config(cls, backbone: Backbone, config) -> PromptLearner:
        """From a method config (DapoConfig, AgnosticConfig): the same fields name the same things."""
        return cls(
            backbone,
            n_ctx=config.n_ctx,
            n_copies=config.n_copies,
            n_deep=config.n_deep_text,
            alpha=config.alpha,
            normal_suffix=config.normal_suffix,
            abnormal_template=config.abnormal_template,
            deep_depth=getattr(config, "deep_text_depth", None),
        )

    def context_parameters(self) -> list[nn.Parameter]:
        return [self.ctx_normal, self.ctx_abnormal]

    def deep_parameters(self) -> list[nn.Parameter]:
        return [] if self.deep_text is None else [self.deep_text]

    def abnormal_suffixes(self, words: Sequence[str]) -> list[str]:
        if "{}" in self.abnormal_template:
            return [self.abnormal_template.format(w) for w in words]
        return [self.abnormal_template]

    def _suffix(self, texts: Sequence[str]) -> SuffixTokens:
        key = tuple(texts)
        if key not in self._suffix_cache:
            if len(self._suffix_cache) > 256:
                self._suffix_cache.clear()
            self._suffix_cache[key] = SuffixTokens(self.backbone, texts, self.n_ctx, self.n_deep)
        return self._suffix_cache[key]

    def forward(self, words: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (normal unit feature [E], abnormal unit features [C, E]); C = len(words) or 1."""
        normal = encode_with_context(
            self.backbone,
            self.ctx_normal,
            self._suffix([self.normal_suffix]),
            self.deep_text,
            self.alpha,
        )[0]
        abnormal = encode_with_context(
            self.backbone,
            self.ctx_abnormal,
            self._suffix(self.abnormal_suffixes(words)),
            self.deep_text,
            self.alpha,
        )
        return normal, abnormal
