"""Where a ``Detector.detect`` batch spends its time, stage by stage (run on the device after the
bench, same QC_* settings as gpu_check.sh): CPU resize + upload, the image encoder on a ready
tensor, the DAPO forward on a ready tensor, and the whole ``detect`` / ``encode_images``.

    python scripts/device/profile_detect.py --frames 256 --batch 32 [--json PATH]

Prints one line per stage (ms per batch, frames/s). Used to explain the bench's gap between the
encoder on tensors and the bare model on pictures.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--cprofile",
        type=int,
        default=0,
        metavar="N",
        help="then profile detect with cProfile and print its N most expensive functions (own time)",
    )
    args = ap.parse_args(argv)

    import torch

    from qc_stream.dapo.backbone import autocast
    from qc_stream.devtools.bench import _frames, bench_prompts
    from qc_stream.inference.decode import decode_image, preprocess_batch
    from qc_stream.inference.detector import Detector
    from qc_stream.settings import load_settings

    settings = load_settings()  # (seeds the per-user models folder on first use)
    settings, _ = bench_prompts(settings)  # as the bench does: untrained prompts cost the same
    det = Detector.from_settings(settings)
    bb = det.backbone
    dev = det._device
    frames = _frames(args.frames, 256, seed=7)
    images = [decode_image(f.data) for _, f in frames]
    products = [p for p, _ in frames]
    batches = [
        (images[i : i + args.batch], products[i : i + args.batch])
        for i in range(0, len(images), args.batch)
    ]
    batches = [b for b in batches if len(b[0]) == args.batch]
    words = list(det._prompts.vocab.words)
    model = det._prompts.model

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    x0 = preprocess_batch(batches[0][0], bb.image_size, bb.mean, bb.std, device=dev)

    def t_resize(ims, _):
        import numpy as np

        from qc_stream.inference.decode import resize_rgb

        np.stack([resize_rgb(im, bb.image_size) for im in ims])

    def t_pre(ims, _):
        preprocess_batch(ims, bb.image_size, bb.mean, bb.std, device=dev)

    def t_enc_tensor(ims, _):
        with torch.inference_mode(), autocast(dev, settings.precision):
            bb.model.encode_image(x0)

    def t_enc_slowpath(ims, _):
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            t_enc_tensor(ims, _)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)

    def t_dapo_tensor(ims, _):
        with torch.inference_mode(), autocast(dev, settings.precision):
            model(x0, words, None)

    def t_encode_images(ims, _):
        det.encode_images(ims)

    def t_detect(ims, prods):
        det.detect(ims, prods)

    stages = [
        ("cpu resize only", t_resize),
        ("resize + upload + normalise", t_pre),
        ("image encoder on a ready tensor", t_enc_tensor),
        ("  the same, MHA fast path off", t_enc_slowpath),
        ("DAPO forward on a ready tensor", t_dapo_tensor),
        ("encode_images (pictures)", t_encode_images),
        ("detect (pictures)", t_detect),
    ]
    report = {
        "device": str(dev),
        "precision": settings.precision,
        "image_size": bb.image_size,
        "backbone": bb.backbone_id,
        "batch": args.batch,
        "stages": {},
    }
    if dev.type == "cuda":
        report["card"] = torch.cuda.get_device_name(dev)
    for name, fn in stages:
        fn(*batches[0])  # warm-up
        sync()
        best = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for ims, prods in batches:
                fn(ims, prods)
            sync()
            dt = (time.perf_counter() - t0) / len(batches)
            best = dt if best is None else min(best, dt)
        report["stages"][name] = {
            "ms_per_batch": round(best * 1000, 2),
            "fps": round(args.batch / best, 1),
        }
        print(
            f"{name:34s} {best * 1000:8.1f} ms/batch {args.batch / best:8.1f} frames/s", flush=True
        )
    if args.cprofile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for ims, prods in batches:
            t_detect(ims, prods)
        sync()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.cprofile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
