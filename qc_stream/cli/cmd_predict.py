"""`qc-stream predict IMAGE...`: one-off inference, JSON Lines on stdout, optional overlay PNGs.

Exit codes: 0 every image got a result; 1 at least one image failed (its line has an "error" field
and stderr says why; the others still get results); 2 a configuration error (no result at all).
"""

from __future__ import annotations

from pathlib import Path

import typer

EXIT_SOME_FAILED = 1


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        images: list[Path] = typer.Argument(
            ...,
            metavar="IMAGE",
            help="Image files (JPEG, PNG, BMP, TIFF, WebP).",
            show_default=False,
        ),
        product: str | None = typer.Option(
            None,
            "--product",
            "-p",
            help="Product shown in the images: restricts defect types and picks its thresholds.",
        ),
        overlay_dir: Path | None = typer.Option(
            None,
            "--overlay-dir",
            help="Write <image stem>.overlay.png (heat map, boxes, defect types) here.",
        ),
        batch_size: int = typer.Option(
            8, "--batch-size", min=1, max=1024, help="Images per model call."
        ),
    ) -> None:
        """Score images: anomaly score, verdict, defect type and regions, one JSON object per line."""
        from qc_stream.settings import load_settings

        settings = load_settings()
        failed = run_predict(images, product, overlay_dir, batch_size, settings)
        if failed:
            typer.echo(f"{failed} of {len(images)} image(s) failed", err=True)
            raise typer.Exit(EXIT_SOME_FAILED)


def run_predict(images, product, overlay_dir, batch_size, settings, out=None) -> int:
    """Print one JSON line per image (in input order); returns the number of failed images."""
    import json
    import sys

    from qc_stream.domain.inspection import decide_verdict
    from qc_stream.errors import InputError
    from qc_stream.inference.decode import decode_image

    out = out or sys.stdout
    detector = (
        None  # loaded on the first decodable image: a run of only bad files costs no model load
    )
    failed = 0
    overlay_names: set[str] = set()

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def fail(path: Path, reason: str) -> None:
        nonlocal failed
        failed += 1
        typer.echo(f"error: {path}: {reason}", err=True)
        emit({"image": str(path), "error": reason})

    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        decoded: list[tuple[Path, object] | tuple[Path, str]] = []
        for path in chunk:
            try:
                decoded.append((path, decode_image(_read(path))))
            except InputError as e:
                decoded.append((path, str(e)))
        good = [(p, im) for p, im in decoded if not isinstance(im, str)]
        outputs = {}
        if good:
            if detector is None:
                from qc_stream.inference.detector import Detector

                detector = Detector.from_settings(settings)
            results = detector.detect([im for _, im in good], [product] * len(good))
            outputs = {id(im): r for (_, im), r in zip(good, results)}
        for path, im in decoded:  # input order, errors in place
            if isinstance(im, str):
                fail(path, im)
                continue
            r = outputs[id(im)]
            det = r.detection
            # QC_THRESHOLDS > the prompt version's calibrated thresholds for the product > global
            verdict = decide_verdict(det.anomaly_score, *r.thresholds)
            line = {
                "image": str(path),
                "anomaly_score": round(det.anomaly_score, 6),
                "verdict": verdict.value,
                "defect_type": det.defect_type,
                "defect_probs": {k: round(v, 6) for k, v in det.defect_probs.items()},
                "regions": [
                    {
                        "defect_type": g.defect_type,
                        "area_px": g.area_px,
                        "bbox": list(g.bbox),
                        "score": round(g.score, 6),
                    }
                    for g in det.regions
                ],
                "model_version": detector.model_version,
                "prompt_version": detector.prompt_version,
            }
            if overlay_dir is not None:
                from qc_stream.inference.overlay import save_overlay

                name = _unique_name(path, overlay_names)
                caption = f"{verdict.value} {det.anomaly_score:.2f}" + (
                    f" {det.defect_type}" if det.defect_type else ""
                )
                line["overlay"] = str(
                    save_overlay(Path(overlay_dir) / name, im, r.anomaly_map, det.regions, caption)
                )
            emit(line)
    return failed


def _read(path: Path) -> bytes:
    from qc_stream.errors import InputError

    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a directory, not an image file") from None
    except PermissionError:
        raise InputError("permission denied") from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}") from None


def _unique_name(path: Path, taken: set[str]) -> str:
    """``<stem>.overlay.png``; a numbered suffix when two inputs share a stem (a/x.jpg, b/x.png)."""
    name, n = f"{path.stem}.overlay.png", 1
    while name in taken:
        n += 1
        name = f"{path.stem}-{n}.overlay.png"
    taken.add(name)
    return name
