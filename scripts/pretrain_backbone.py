#!/usr/bin/env python
"""Pretrain the small open_clip backbone `qc-clip-tiny-cpu` contrastively on synthetic image-caption pairs.

No pretrained CLIP reaches these machines, so we give a tiny CLIP the "world knowledge" DAPO needs:
every product of the catalog, normal and with every defect word, described by varied captions
(templates, synonyms, generic nouns for 15 %). Captions repeat within a batch, so the loss is
multi-positive: every caption that correctly describes an image is a match.

Resolution: the model is exported at 192 px (patch 16 -> a 12x12 patch grid, fine enough for pixel
maps), but 3 of 4 steps train at 128 px with the positional embedding interpolated (2.3x cheaper per
image), so the budget buys many more images; the 192 px steps keep the native size sharp.

Token dropping (`--mask-ratio 0.5`, FLIP): on the CPU the image tower is the bottleneck, not the
data, so dropping half the patch tokens while training buys ~1.35x the images in the same time;
the last `--unmasked-share` of the budget trains on all tokens, as inference sees them. The best
2-core runs (model card of `qc-clip-tiny`, runs 4, 6 and 14) use it. The text tower
runs only up to the batch's longest caption (exact, ~1/3 cheaper). With `--keep-defect-tokens`
the patches a defect covers are never among the dropped ones: with 75 % dropped, a caption that
names a small defect would otherwise describe an image that no longer shows it three times in
four (`--keep-defect-from 0.5`: only in the second half of the budget, as the shipped run 14).
Kept defect patches could give the defect away by position (a cluster among scattered survivors);
`--decoy-keep` gives every image without a defect another image's defect patches to keep, but did
not help (model card, runs 12 and 13).
`scripts/time_pretrain_step.py` shows where a step's time goes on the machine at hand.

Precision: bf16 autocast on a GPU, and on a CPU only where it is native (AVX-512 BF16 or AMX);
elsewhere it is emulated and ~10x slower than fp32, so such CPUs train in fp32.

The learning-rate schedule runs on wall time (`--minutes`), so the run ends on time on a shared
machine; checkpoints (fp16 safetensors + config + model card) are written every
`--checkpoint-minutes`, so a usable model exists even if the run is stopped.

The shipped default `qc-clip-tiny-cpu` (run 14, 57 minutes on 2 cores):

    .venv/bin/python scripts/pretrain_backbone.py --out models/backbones/qc-clip-tiny-cpu --minutes 57 \
        --hi-every 2 --patch-loss-weight 0.25 --mask-ratio 0.75 --unmasked-share 0.15 \
        --keep-defect-tokens --keep-defect-from 0.5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qc_stream.dapo.backbone import bf16_is_native  # noqa: E402
from qc_stream.domain.catalog import DEFECT_TYPES  # noqa: E402
from qc_stream.settings import DEFAULT_BACKBONE  # noqa: E402
from qc_stream.synth import PRODUCTS, generate  # noqa: E402
from qc_stream.synth.captions import DEFECT_PHRASES, caption, matches  # noqa: E402
from qc_stream.synth.generator import closeup_crop, render_sample  # noqa: E402

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


PATCH = 16  # the image tower's patch size


def model_config(image_size: int, width: int = 192, layers: int = 4) -> dict:
    return {
        "model_cfg": {
            "embed_dim": 128,
            "vision_cfg": {
                "image_size": image_size,
                "layers": layers,
                "width": width,
                "head_width": 32,
                "patch_size": PATCH,
            },
            "text_cfg": {
                "context_length": 32,
                "vocab_size": 49408,
                "width": 128,
                "heads": 4,
                "layers": 3,
            },
        },
        "preprocess_cfg": {
            "mean": list(MEAN),
            "std": list(STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


# ---------------- data ----------------

ALL_TYPES = list(DEFECT_TYPES)
PRODUCT_NAMES = list(PRODUCTS)


def batch_plan(step: int, args) -> tuple[int, int]:
    """(image size, batch size) of a step: every `hi_every`-th step at the export size."""
    if args.hi_every and step % args.hi_every == args.hi_every - 1:
        return args.image_size, args.batch // 2
    return args.low_res, args.batch


def make_batch(step: int, args, tokenizer):
    size, n = batch_plan(step, args)
    rng = np.random.default_rng([args.seed, step])
    images, img_keys, cap_keys, texts, defect_patches = [], [], [], [], []
    grid = size // PATCH
    flag_defects = (
        args.keep_defect_tokens and args.mask_ratio > 0
    )  # only then does the loop read them
    for i in range(n):
        product = PRODUCT_NAMES[int(rng.integers(len(PRODUCT_NAMES)))]
        if rng.random() < args.normal_share:
            kinds = []
        elif rng.random() < args.any_type_share:  # any defect on any product: broader "world"
            kinds = [ALL_TYPES[int(rng.integers(len(ALL_TYPES)))]]
        else:
            kinds = None
        zoom = rng.random() < args.closeup_share
        render = int(size * rng.uniform(1.5, 2.0)) if zoom else size
        s = render_sample(
            product, args.seed, step * 1024 + i, render, 0.0 if kinds == [] else 1.0, kinds
        )
        text, key = caption(rng, product, s.defect_type, closeup=zoom)
        images.append(closeup_crop(s, rng, size) if zoom else s.image)
        if (
            flag_defects
        ):  # which patches the defect touches (unknown for a close-up crop: none marked)
            defect_patches.append(
                np.zeros(grid * grid, bool)
                if zoom
                else s.mask.reshape(grid, PATCH, grid, PATCH).any(axis=(1, 3)).reshape(-1)
            )
        img_keys.append((product, s.defect_type or "normal"))
        cap_keys.append(key)
        texts.append(text)
    batch = {
        "images": torch.from_numpy(np.stack(images)),
        "tokens": tokenizer(texts),
        "positives": torch.from_numpy(matches(img_keys, cap_keys)),
    }
    if flag_defects:
        patterns = np.stack(defect_patches)
        if args.decoy_keep:
            patterns = add_decoys(patterns, rng)
        batch["defect_patches"] = torch.from_numpy(patterns)
    return batch


def add_decoys(patterns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give every image without a kept-patch pattern (normal images, close-ups) the pattern of a random
    defective image of the batch.

    With only the defects' patches kept for sure, which positions survive the dropping could give
    the defect away: a tight cluster among scattered survivors means "defect", and the tower can learn
    that from the positional embedding instead of from the pixels, a shortcut inference (all tokens
    kept) never offers. With decoys every image shows such a cluster."""
    donors = np.flatnonzero(patterns.any(axis=1))
    if donors.size == 0:
        return patterns
    out = patterns.copy()
    empty = np.flatnonzero(~patterns.any(axis=1))
    out[empty] = patterns[rng.choice(donors, size=empty.size)]
    return out


class SynthBatches(torch.utils.data.IterableDataset):
    def __init__(self, args, tokenizer, start_step: int = 0):
        self.args, self.tokenizer, self.start = args, tokenizer, start_step

    def __iter__(self):
        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        # workers take steps round-robin; the loader hands batches back in step order
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start + wid
        while True:
            yield make_batch(step, self.args, self.tokenizer)
            step += nw


def token_plan(frac: float, args) -> tuple[float, bool]:
    """At `frac` of the wall-time budget: the share of patch tokens kept, and whether a defect's
    patches are kept for sure."""
    if not args.mask_ratio or frac >= 1.0 - args.unmasked_share:
        return 1.0, False
    return 1.0 - args.mask_ratio, args.keep_defect_tokens and frac >= args.keep_defect_from


def train_in_bf16(args) -> bool:
    """bf16 autocast unless `--no-bf16`, or the device would only emulate it."""
    return not args.no_bf16 and bf16_is_native(args.device)


def to_input(u8: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    x = u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------- model ----------------


def encode_image_any_size(
    model,
    x: torch.Tensor,
    with_patch_mean: bool = False,
    keep: float = 1.0,
    generator: torch.Generator | None = None,
    always_keep: torch.Tensor | None = None,
):
    """CLIP image embedding at any multiple of the patch size (positional embedding interpolated).

    `with_patch_mean`: also return the projected mean of the patch tokens (same ln_post and
    projection as CLS), for the optional patch-level loss.
    `keep` < 1: drop a random share of each image's patch tokens after the positional embedding
    (FLIP, Li et al. 2023): the tower's cost falls with the token count, so a fixed CPU budget sees
    more images; the mean patch token is then over the kept tokens.
    `always_keep` ([B, n] bool, optional): patches kept first, before the random ones (up to the
    kept count), e.g. the patches a defect covers, so a caption naming the defect stays true."""
    v = model.visual
    t = v.conv1(x)
    g = t.shape[-1]
    t = t.flatten(2).transpose(1, 2)
    pos = v.positional_embedding
    base = int(round(math.sqrt(pos.shape[0] - 1)))
    if g != base:
        grid = pos[1:].reshape(1, base, base, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, size=(g, g), mode="bicubic", align_corners=False, antialias=g < base
        )
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(g * g, -1)])
    t = t + pos[1:].to(t.dtype)
    if keep < 1.0:
        n = t.shape[1]
        order = torch.rand(t.shape[0], n, generator=generator)
        if always_keep is not None:
            order = order - always_keep.float()  # in [-1, 0) for those: they sort first
        kept = order.argsort(dim=1)[:, : max(1, round(n * keep))]
        t = torch.gather(t, 1, kept.to(t.device)[..., None].expand(-1, -1, t.shape[-1]))
    cls = (v.class_embedding + pos[0]).view(1, 1, -1).expand(t.shape[0], 1, -1).to(t.dtype)
    t = torch.cat([cls, t], dim=1)
    t = v.ln_pre(t)
    t = v.transformer(t)
    pooled, _ = v._pool(t)
    if with_patch_mean:
        return pooled @ v.proj, v.ln_post(t[:, 1:]).mean(dim=1) @ v.proj
    return pooled @ v.proj


def encode_text_trimmed(model, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's `encode_text`, run only up to the batch's longest caption.

    Captions fill about half of the context; the rest is padding that the causal mask keeps from
    ever reaching the end-of-text token the embedding is read at, so cutting it changes nothing but
    the text tower's cost."""
    n = int((tokens != 0).sum(dim=1).max())
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type)
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def multi_positive_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    img = F.normalize(img.float(), dim=-1)
    txt = F.normalize(txt.float(), dim=-1)
    logits = scale.exp() * img @ txt.T
    p = pos.float()
    i2t = -(p / p.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    t2i = -(p / p.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
    return (i2t + t2i) / 2


# ---------------- zero-shot check ----------------


def build_val(size: int, per_product: int = 16, seed: int = 4242):
    return {p: generate(p, per_product, seed=seed, size=size, defect_rate=0.5) for p in PRODUCTS}


@torch.no_grad()
def zero_shot(model, tokenizer, val) -> dict:
    from sklearn.metrics import roc_auc_score

    model.eval()
    dev = next(model.parameters()).device
    aurocs, correct, total = {}, 0, 0
    for product, samples in val.items():
        noun = PRODUCTS[product].noun
        kinds = list(PRODUCTS[product].defects)
        prompts = [f"a photo of a flawless {noun}", f"a photo of a damaged {noun}"]
        prompts += [f"a photo of a {noun} with {DEFECT_PHRASES[k][0]}" for k in kinds]
        txt = F.normalize(model.encode_text(tokenizer(prompts).to(dev)).float(), dim=-1)
        x = to_input(torch.from_numpy(np.stack([s.image for s in samples])), dev)
        img = F.normalize(encode_image_any_size(model, x).float(), dim=-1)
        sim = (100 * img @ txt.T).cpu()
        score = sim[:, :2].softmax(1)[:, 1].numpy()
        y = np.array([s.defect_type is not None for s in samples])
        if 0 < y.sum() < len(y):
            aurocs[product] = float(roc_auc_score(y, score))
        for s, row in zip(samples, sim[:, 2:]):
            if s.defect_type is not None:
                correct += int(kinds[int(row.argmax())] == s.defect_type)
                total += 1
    model.train()
    return {
        "image_auroc_mean": float(np.mean(list(aurocs.values()))),
        "image_auroc": aurocs,
        "type_accuracy": correct / max(total, 1),
    }


# ---------------- export ----------------


def export(model, out: Path, config: dict, card: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()
    }
    tmp = out / "weights.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "weights.safetensors")
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "training_log.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(card))


def model_card(c: dict) -> str:
    zs = c.get("zero_shot") or {}
    per = ", ".join(f"{k} {v:.2f}" for k, v in (zs.get("image_auroc") or {}).items())
    width = c.get("vision_width", 192)
    rows = [
        (
            "architecture",
            f"embed 128; vision width {width}, {c.get('vision_layers', 4)} layers, {width // 32} heads, "
            "patch 16; text width 128, 3 layers, 4 heads, ctx 32",
        ),
        (
            "parameters",
            f"{c['parameters'] / 1e6:.2f} M (6.3 M of them the token table), "
            f"weights fp16 ({c['weights_mb']:.1f} MB)",
        ),
        (
            "data",
            f"fresh synthetic samples every step: all {len(PRODUCTS)} products, "
            f"{c['normal_share']:.0%} normal; defects from the product's own subset, or with "
            f"probability {c['any_type_share']:.0%} any of the {len(DEFECT_TYPES)} types; captions "
            'from templates + synonyms, 15 % with a generic noun ("object", "surface"), 15 % of '
            'defect captions without the type ("a damaged pill"); '
            f"{c.get('closeup_share', 0):.0%} close-ups (rendered 1.5-2x larger and cropped; a "
            "defect's centre stays in the crop) with close-up captions",
        ),
        (
            "resolution",
            f"steps at {c['low_res']} px (positional embedding interpolated) and every "
            f"{c['hi_every']}-th step at {c['image_size']} px",
        ),
        (
            "loss",
            "multi-positive symmetric InfoNCE (every caption that correctly describes an image is a "
            "positive), learnable temperature; weight "
            f"{c.get('patch_loss_weight', 0)} on the same loss for the mean patch token",
        ),
        ("token dropping", _token_dropping(c)),
        (
            "optimiser",
            f"AdamW lr {c['lr']}, weight decay {c['weight_decay']}, batch {c['batch']} (half at "
            f"{c['image_size']} px), warm-up then cosine on wall time, bf16 autocast: {c['bf16']}",
        ),
        (
            "run",
            f"{c['steps']} steps, {c['images_seen']:,} images, {c['minutes']:.1f} min on "
            f"{c['host']} (device {c.get('device', 'cpu')}), finished {c['finished_at']}",
        ),
        (
            "final loss",
            f"{c['loss_last']:.3f} (mean of the last 50 steps; first 50: {c['loss_first']:.3f})",
        ),
        (
            "zero-shot check",
            '"flawless X" vs "damaged X" image AUROC on fresh samples, mean '
            f"{zs.get('image_auroc_mean', float('nan')):.3f} ({per}); defect-type accuracy among "
            f"the product's types {zs.get('type_accuracy', float('nan')):.3f}",
        ),
    ]
    table = "\n".join(f"| {name} | {text} |" for name, text in rows)
    return f"""# {c.get("name", DEFAULT_BACKBONE)}

A tiny open_clip CLIP (ViT image tower, patch 16, exported at {c["image_size"]} px; text tower with the
standard open_clip BPE tokenizer, context 32) pretrained from scratch on synthetic industrial
image-caption pairs from `qc_stream.synth`. It stands in for an internet-pretrained CLIP on machines
without internet: the default backbone of the demo, `qc-stream predict` and the tests.

| | |
|---|---|
{table}

The pretraining sees every product and defect word, as an internet CLIP has seen the world; the
benchmark's distribution shift lives in the DAPO prompt training (auxiliary products only, see
`docs/benchmark.md`). Weights differ from run to run (the schedule follows wall time).

Reproduce: `{c["command"]}`
"""


def _token_dropping(c: dict) -> str:
    """The card's token-dropping row: FLIP share, and which patches are kept (defects, decoys)."""
    if not c.get("mask_ratio"):
        return "none"
    text = (
        f"{c['mask_ratio']:.0%} of patch tokens dropped per image (FLIP), the last "
        f"{c['unmasked_share']:.0%} of the budget without"
    )
    if c.get("keep_defect_tokens"):
        text += "; a defect's patches are never dropped"
        if c.get("keep_defect_from"):
            text += f" from {c['keep_defect_from']:.0%} of the budget on"
    if c.get("decoy_keep"):
        text += "; images without a defect keep another image's defect patches (decoys)"
    return text


# ---------------- main ----------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "models" / "backbones" / DEFAULT_BACKBONE)
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=192)
    ap.add_argument("--low-res", type=int, default=128)
    ap.add_argument("--hi-every", type=int, default=4)
    ap.add_argument(
        "--vision-width", type=int, default=192, help="image tower width (a multiple of 32)"
    )
    ap.add_argument("--vision-layers", type=int, default=4, help="image tower depth")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-share", type=float, default=0.03)
    ap.add_argument("--normal-share", type=float, default=0.35)
    ap.add_argument("--any-type-share", type=float, default=0.3)
    ap.add_argument(
        "--patch-loss-weight",
        type=float,
        default=0.0,
        help="weight of the same loss on the mean patch token (0 = CLS only)",
    )
    ap.add_argument(
        "--mask-ratio",
        type=float,
        default=0.0,
        help="share of patch tokens dropped per image while training (FLIP; 0 = none)",
    )
    ap.add_argument(
        "--unmasked-share",
        type=float,
        default=0.1,
        help="with --mask-ratio: the last share of the wall-time budget trains without dropping",
    )
    ap.add_argument(
        "--keep-defect-tokens",
        action="store_true",
        help="with --mask-ratio: never drop the patches a defect covers (the caption names it)",
    )
    ap.add_argument(
        "--keep-defect-from",
        type=float,
        default=0.0,
        help="with --keep-defect-tokens: keep them only from this share of the wall-time budget on "
        "(the first part drops tokens at random, so the tower learns defects from pixels first)",
    )
    ap.add_argument(
        "--decoy-keep",
        action="store_true",
        help="with --keep-defect-tokens: images without a defect keep a random defective image's "
        "patches, so the kept positions do not give the defect away",
    )
    ap.add_argument(
        "--init", type=Path, default=None, help="start from these weights (safetensors)"
    )
    ap.add_argument(
        "--closeup-share",
        type=float,
        default=0.0,
        help="share of images that are zoomed-in crops (rendered 1.5-2x larger, cropped)",
    )
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument(
        "--no-bf16",
        action="store_true",
        help="train in fp32 (the default on a CPU without native bf16, see bf16_is_native)",
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--workers", type=int, default=1, help="data-generating processes")
    ap.add_argument(
        "--host", default="2-core CPU VM", help="what the run ran on (for the model card)"
    )
    args = ap.parse_args(argv)
    if not 0.0 <= args.mask_ratio < 1.0 or not 0.0 <= args.unmasked_share <= 1.0:
        ap.error("--mask-ratio must be in [0, 1), --unmasked-share in [0, 1]")
    if not 0.0 <= args.keep_defect_from < 1.0:
        ap.error("--keep-defect-from must be in [0, 1)")
    for flag, used in (
        ("--decoy-keep", args.decoy_keep),
        ("--keep-defect-from", args.keep_defect_from),
    ):
        if used and not (
            args.keep_defect_tokens and args.mask_ratio
        ):  # else it would silently do nothing
            ap.error(f"{flag} works with --keep-defect-tokens and --mask-ratio > 0")
    if args.image_size % PATCH or args.low_res % PATCH or min(args.image_size, args.low_res) <= 0:
        ap.error(
            f"--image-size and --low-res must be positive multiples of the patch size ({PATCH})"
        )
    if args.vision_width % 32 or args.vision_width <= 0 or args.vision_layers <= 0:
        ap.error(
            "--vision-width must be a positive multiple of 32 (heads of width 32), --vision-layers positive"
        )
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = model_config(args.image_size, args.vision_width, args.vision_layers)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    model = open_clip.create_model(f"local-dir:{args.out.resolve()}", load_weights=False)
    if (
        args.init is not None
    ):  # fine-tune from earlier weights (e.g. the shipped ones) instead of from scratch
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(str(args.init)).items()})
    tokenizer = open_clip.get_tokenizer(f"local-dir:{args.out.resolve()}")
    model.to(args.device).train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "token_embedding" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "token_embedding" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    loader = torch.utils.data.DataLoader(
        SynthBatches(args, tokenizer),
        batch_size=None,
        num_workers=args.workers,
        prefetch_factor=4,
        persistent_workers=True,
        pin_memory=args.device != "cpu",
    )
    val = build_val(args.image_size)
    budget = args.minutes * 60
    use_bf16 = train_in_bf16(args)
    command = "python scripts/pretrain_backbone.py " + shlex.join(a for a in sys.argv[1:])
    losses, images_seen, step = [], 0, 0
    mask_rng = torch.Generator().manual_seed(args.seed)
    t_start = time.perf_counter()
    last_ckpt = t_start
    zs = None
    print(
        f"pretraining {n_params / 1e6:.2f} M params for {args.minutes} min -> {args.out}",
        flush=True,
    )

    def card(final: bool) -> dict:
        return {
            "name": args.out.name,
            "image_size": args.image_size,
            "low_res": args.low_res,
            "hi_every": args.hi_every,
            "vision_width": args.vision_width,
            "vision_layers": args.vision_layers,
            "parameters": n_params,
            "weights_mb": n_params * 2 / 1e6,
            "normal_share": args.normal_share,
            "any_type_share": args.any_type_share,
            "closeup_share": args.closeup_share,
            "patch_loss_weight": args.patch_loss_weight,
            "mask_ratio": args.mask_ratio,
            "unmasked_share": args.unmasked_share if args.mask_ratio else None,
            "keep_defect_tokens": bool(args.keep_defect_tokens and args.mask_ratio),
            "decoy_keep": args.decoy_keep,  # parse_args refuses it without kept defect tokens
            "keep_defect_from": args.keep_defect_from,
            "init": str(args.init) if args.init else None,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "batch": args.batch,
            "bf16": use_bf16,
            "steps": step,
            "images_seen": images_seen,
            "minutes": (time.perf_counter() - t_start) / 60,
            "threads": args.threads,
            "host": args.host,
            "device": args.device,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds")
            if final
            else "(in progress)",
            "loss_last": float(np.mean(losses[-50:])) if losses else float("nan"),
            "loss_first": float(np.mean(losses[:50])) if losses else float("nan"),
            "loss_curve": [float(np.mean(losses[i : i + 50])) for i in range(0, len(losses), 50)],
            "zero_shot": zs,
            "command": command,
            "seed": args.seed,
        }

    for batch in loader:
        elapsed = time.perf_counter() - t_start
        if elapsed >= budget:
            break
        frac = elapsed / budget
        lr = (
            args.lr
            * min(1.0, frac / args.warmup_share)
            * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        x = to_input(batch["images"], args.device)
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=use_bf16):
            keep, keep_defects = token_plan(frac, args)
            img, patch_mean = encode_image_any_size(
                model,
                x,
                with_patch_mean=True,
                keep=keep,
                generator=mask_rng,
                always_keep=batch.get("defect_patches") if keep_defects else None,
            )
            txt = encode_text_trimmed(model, batch["tokens"].to(args.device, non_blocking=True))
        positives = batch["positives"].to(args.device)
        loss = multi_positive_loss(img, txt, model.logit_scale, positives)
        if args.patch_loss_weight:
            # the mean patch token must match the caption too, so every patch token gets a direct
            # pull into the text space (CLS alone leaves the patch tokens of the last layer untrained)
            w = args.patch_loss_weight
            loss = (1 - w) * loss + w * multi_positive_loss(
                patch_mean, txt, model.logit_scale, positives
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        images_seen += x.shape[0]
        step += 1
        if step % 20 == 0:
            el = time.perf_counter() - t_start
            print(
                f"step {step} {el / 60:5.1f} min  loss {np.mean(losses[-20:]):.3f}  lr {lr:.2e}  "
                f"T {model.logit_scale.exp().item():.1f}  {images_seen / el:.0f} img/s",
                flush=True,
            )
        if time.perf_counter() - last_ckpt >= args.checkpoint_minutes * 60:
            zs = zero_shot(model, tokenizer, val)
            export(model, args.out, config, card(False))
            last_ckpt = time.perf_counter()
            print(
                f"checkpoint at step {step}: zero-shot AUROC {zs['image_auroc_mean']:.3f}, "
                f"type acc {zs['type_accuracy']:.3f}",
                flush=True,
            )
    zs = zero_shot(model, tokenizer, val)
    export(model, args.out, config, card(True))
    print(
        f"done: {step} steps, {images_seen} images; zero-shot AUROC {zs['image_auroc_mean']:.3f} "
        f"{json.dumps({k: round(v, 3) for k, v in zs['image_auroc'].items()})}, type acc {zs['type_accuracy']:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
