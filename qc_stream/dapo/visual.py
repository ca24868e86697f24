"""Image side: deep visual prompts, tapped patch tokens and per-layer adapters over the frozen ViT.

Layer 0: ``n`` learned tokens are inserted right after CLS (after the patch/positional embedding and
``ln_pre``). Before every later block the same slots become ``alpha * previous + (1 - alpha) * learned_i``.
Patch tokens are read after 4 evenly spaced blocks (6/12/18/24 of ViT-L), prompt tokens stripped,
passed through the backbone's frozen ``ln_post`` and then a trainable ``Linear(width -> embed_dim)``
adapter per tapped layer. The adapters start as a copy of CLIP's visual projection, so an untrained
model scores patches exactly like CLIP's own dense features; training moves them from there.
The global feature is CLS after ``ln_post`` and the (frozen) projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qc_stream.dapo.backbone import Backbone


@dataclass
class VisualFeatures:
    global_feature: torch.Tensor  # [B, E] (not normalised)
    patch_features: list[torch.Tensor]  # per tapped layer [B, gh*gw, E] (not normalised)
    grid: tuple[int, int]


class VisualEncoder(nn.Module):
    """Frozen ViT + optional deep visual prompts (``n_prompts``) + optional trainable adapters.

    With ``n_prompts=0`` and ``adapters=False`` it is plain CLIP: tapped patch tokens go through the
    frozen ``ln_post`` and projection (what the baselines use).
    """

    def __init__(
        self,
        backbone: Backbone,
        n_prompts: int = 4,
        alpha: float = 0.01,
        n_taps: int = 4,
        adapters: bool = True,
        taps: list[int] | None = None,
        dpam_from: int | None = None,
    ):
        super().__init__()
        self.backbone = backbone  # plain attribute: the backbone is not part of the prompt weights
        self.alpha = alpha
        self.dpam_from = dpam_from  # first block of the V-V attention path (None: off)
        self.taps = list(taps) if taps is not None else backbone.tap_layers(n_taps)
        width, embed = backbone.vision_width, backbone.embed_dim
        if n_prompts:
            self.deep_visual = nn.Parameter(
                torch.randn(backbone.vision_layers, n_prompts, width) * 0.02
            )
        else:
            self.register_parameter("deep_visual", None)
        if adapters:
            proj = backbone.visual.proj.detach().float().cpu()  # [width, embed]
            self.adapters = nn.ModuleList()
            for _ in self.taps:
                lin = nn.Linear(width, embed)
                with torch.no_grad():
                    lin.weight.copy_(proj.t())
                    lin.bias.zero_()
                self.adapters.append(lin)
        else:
            self.adapters = None

    @property
    def n_prompts(self) -> int:
        return 0 if self.deep_visual is None else self.deep_visual.shape[1]

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [] if self.deep_visual is None else [self.deep_visual]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [] if self.adapters is None else list(self.adapters.parameters())

    def forward(self, images: torch.Tensor) -> VisualFeatures:
        """``images`` [B, 3, S, S], normalised, S = backbone image size."""
        vis = self.backbone.visual
        b = images.shape[0]
        gh, gw = images.shape[-2] // vis.patch_size[0], images.shape[-1] // vis.patch_size[1]
        x = vis._embeds(images)  # conv patches + CLS + positional embedding + ln_pre: [B, 1+HW, W]
        n = self.n_prompts
        if n:
            x = torch.cat(
                [
                    x[:, :1],
                    self.deep_visual[0].to(x.dtype).unsqueeze(0).expand(b, -1, -1),
                    x[:, 1:],
                ],
                dim=1,
            )
        transformer = vis.transformer
        if not transformer.batch_first:
            x = x.transpose(0, 1)
        taps = {layer: j for j, layer in enumerate(self.taps)}
        patches: list[torch.Tensor] = [None] * len(self.taps)  # type: ignore[list-item]
        vv = None  # the DPAM path (batch-first), started from the ordinary path at ``dpam_from``
        for i, block in enumerate(transformer.resblocks):
            if self.dpam_from is not None and i >= self.dpam_from:
                xb = x if transformer.batch_first else x.transpose(0, 1)
                vv = (xb if vv is None else vv) + _vv_attention(block, xb)
            if i > 0 and n:
                xb = x if transformer.batch_first else x.transpose(0, 1)
                blended = self.alpha * xb[:, 1 : 1 + n] + (1 - self.alpha) * self.deep_visual[i].to(
                    xb.dtype
                )
                xb = torch.cat([xb[:, :1], blended, xb[:, 1 + n :]], dim=1)
                x = xb if transformer.batch_first else xb.transpose(0, 1)
            x = block(x)
            if i in taps:
                xb = x if transformer.batch_first else x.transpose(0, 1)
                if vv is not None:
                    xb = vv
                tokens = vis.ln_post(xb[:, 1 + n :])
                j = taps[i]
                patches[j] = (
                    self.adapters[j](tokens) if self.adapters is not None else tokens @ vis.proj
                )
        xb = x if transformer.batch_first else x.transpose(0, 1)
        global_feature = vis.ln_post(xb[:, 0]) @ vis.proj
        return VisualFeatures(global_feature=global_feature, patch_features=patches, grid=(gh, gw))


def _vv_attention(block, x: torch.Tensor) -> torch.Tensor:
    """DPAM (AnomalyCLIP's diagonally prominent attention): the block's own value projection attends
    to itself (softmax of V V^T per head), so each patch mostly keeps its own, local feature instead
    of the global mixing Q K^T attention does in CLIP's later layers. ``x`` [B, L, W], the block's
    input on the ordinary path; returns the attention output after the block's out projection
    (no MLP: the V-V path adds attention outputs only)."""
    attn = block.attn
    width = x.shape[-1]
    heads = attn.num_heads
    y = block.ln_1(x)
    w_v = attn.in_proj_weight[2 * width :]
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    v = torch.nn.functional.linear(y, w_v, b_v)  # [B, L, W]
    b, length, _ = v.shape
    v = v.view(b, length, heads, width // heads).transpose(1, 2)  # [B, h, L, d]
    # softmax(V V^T / sqrt(d)) V is scaled dot-product attention with q = k = v: the fused kernel
    # (flash / memory-efficient on a GPU) never holds the [B, h, L, L] weights (1.9 GB per layer at
    # batch 32, 518 px, ViT-L in fp16).
    out = torch.nn.functional.scaled_dot_product_attention(v, v, v)
    out = out.transpose(1, 2).reshape(b, length, width)
    out = attn.out_proj(out)
    ls = getattr(block, "ls_1", None)
    return ls(out) if ls is not None else out
