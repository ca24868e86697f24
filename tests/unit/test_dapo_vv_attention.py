"""DPAM's V-V attention through the fused scaled-dot-product kernel is the formula it stands for."""

from __future__ import annotations

import torch

from qc_stream.dapo.backbone import load_backbone
from qc_stream.dapo.visual import _vv_attention


def test_vv_attention_is_softmax_of_v_vt_times_v():
    backbone = load_backbone("qc-test-tiny", device=torch.device("cpu"))
    block = backbone.model.visual.transformer.resblocks[0]
    attn = block.attn
    width, heads = attn.embed_dim, attn.num_heads
    x = torch.randn(3, 17, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = _vv_attention(block, x)
        # the explicit formula: per head, softmax(V V^T / sqrt(d)) V, then the out projection
        v = torch.nn.functional.linear(
            block.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :]
        )
        v = v.view(3, 17, heads, width // heads).transpose(1, 2)
        w = (v @ v.transpose(-2, -1) * (width // heads) ** -0.5).softmax(dim=-1)
        want = attn.out_proj((w @ v).transpose(1, 2).reshape(3, 17, width))
        ls = getattr(block, "ls_1", None)
        want = ls(want) if ls is not None else want
    assert got.shape == (3, 17, width)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
