"""`qc-stream predict IMAGE|DIR|GLOB...`: one-off inference, JSON Lines on stdout, optional run folder.

Inputs: files; folders (every non-hidden file below them, recursively, sorted); glob patterns
(``'shots/**/*.png'``, quoted so the shell leaves them). ``--output DIR`` writes a run folder like
``yolo predict``: ``results.jsonl`` (the stdout lines), ``results.csv`` (one row per image, errors
included) and ``overlays/``. stderr: a progress bar while images are scored and a closing line
with the images/s.

Exit codes: 0 every image got a result; 1 at least one image failed (its line has an "error" field
and stderr says why; the others still get results); 2 a configuration error or an unknown
product (no result at all).
"""

from __future__ import annotations

from pathlib import Path

import typer

EXIT_SOME_FAILED = 1
GLOB_CHARS = set("*?[")
CSV_COLUMNS = (
    "image",
    "verdict",
    "anomaly_score",
    "defect_type",
    "warn",
    "reject",
    "threshold_source",
    "regions",
    "top_region_type",
    "top_region_bbox",
    "top_region_score",
    "prompt_version",
    "prompt_version_source",
    "overlay",
    "error",
)


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        images: list[str] = typer.Argument(
            ...,
            metavar="IMAGE|DIR|GLOB",
            help="Image files (JPEG, PNG, BMP, TIFF, WebP), folders (recursive) or glob patterns.",
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
            help="Write <image stem>.overlay.png (heat map, outlines, boxes, defect types) here.",
        ),
        output: Path | None = typer.Option(
            None,
            "--output",
            help="Run folder: results.jsonl, results.csv and overlays/ (created if missing).",
        ),
        batch_size: int = typer.Option(
            8, "--batch-size", min=1, max=1024, help="Images per model call."
        ),
    ) -> None:
        """Score images: anomaly score, verdict, defect type, regions and the thresholds used."""
        from qc_stream.settings import load_settings

        settings = load_settings()
        paths = expand_inputs(images)
        failed = run_predict(
            paths, product, overlay_dir, batch_size, settings, output_dir=output, progress=True
        )
        if failed:
            typer.echo(f"{failed} of {len(paths)} image(s) failed", err=True)
            raise typer.Exit(EXIT_SOME_FAILED)


def expand_inputs(args: list[str]) -> list[Path | str]:
    """Files as given; a folder -> its non-hidden files, recursively, sorted; a pattern -> its
    matches, sorted. An argument that matches nothing stays as given (it gets an error row)."""
    import glob

    out: list[Path | str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            out.extend(found)
        elif not path.exists() and GLOB_CHARS & set(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            out.extend(matches if matches else [f"{arg}"])
        else:
            out.append(path)
    return out


def run_predict(
    images,
    product,
    overlay_dir,
    batch_size,
    settings,
    out=None,
    *,
    output_dir: Path | None = None,
    progress: bool = False,
) -> int:
    """Print one JSON line per image (in input order); returns the number of failed images.

    ``output_dir``: also write the run folder. ``progress``: a progress bar and the closing line on
    stderr. A pattern that matched nothing (a ``str`` in ``images``) gets an error line."""
    import json
    import sys
    import time

    from qc_stream.domain.inspection import decide_verdict
    from qc_stream.errors import InputError, QcError
    from qc_stream.inference.decode import decode_image
    from qc_stream.inference.device_decode import defer_decode, device_decode_on

    # QC_DEVICE_DECODE: JPEGs the model's device decodes stay encoded until the batch.
    decode = defer_decode if device_decode_on(settings) else decode_image
    out = out or sys.stdout
    images = list(images)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        overlay_dir = overlay_dir or output_dir / "overlays"
    run = _RunFolder(output_dir) if output_dir is not None else None
    detector = None
    failed = 0
    overlay_names: set[str] = set()
    bar = _Progress(len(images)) if progress else None
    started = time.perf_counter()

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()
        if run is not None:
            run.add(obj)

    def fail(path, reason: str) -> None:
        nonlocal failed
        failed += 1
        if bar is not None:
            bar.note(f"error: {path}: {reason}")
        else:
            typer.echo(f"error: {path}: {reason}", err=True)
        emit({"image": str(path), "error": reason})

    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            decoded: list[tuple[object, object]] = []
            for path in chunk:
                try:
                    if isinstance(path, str):
                        raise InputError("no file matches this pattern")
                    decoded.append((path, decode(_read(path))))
                except InputError as e:
                    decoded.append((path, str(e)))
            good = [(p, im) for p, im in decoded if not isinstance(im, str)]
            outputs = {}
            if good:
                if detector is None:
                    detector = _load_detector(settings, bar)
                    reason = detector.unknown_product(product)
                    if reason:
                        raise QcError(reason)
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
                line = result_line(str(path), det, verdict.value, detector)
                if overlay_dir is not None:
                    from qc_stream.inference.overlay import save_overlay

                    name = _unique_name(path, overlay_names)
                    caption = f"{verdict.value} {det.anomaly_score:.2f}" + (
                        f" {det.defect_type}" if det.defect_type else ""
                    )
                    line["overlay"] = str(
                        save_overlay(
                            Path(overlay_dir) / name, im, r.anomaly_map, det.regions, caption
                        )
                    )
                emit(line)
            if bar is not None:
                bar.advance(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        if run is not None:
            run.close()
    if progress:
        elapsed = max(time.perf_counter() - started, 1e-9)
        scored = len(images) - failed
        where = f"; results in {output_dir}" if output_dir is not None else ""
        typer.echo(
            f"{len(images)} image(s), {failed} failed, in {elapsed:.1f} s "
            f"({scored / elapsed:.2f} images/s){where}",
            err=True,
        )
    return failed


def result_line(image: str, det, verdict: str, detector) -> dict:
    """One image's JSON object (the predict contract)."""
    t = det.thresholds
    return {
        "image": image,
        "anomaly_score": round(det.anomaly_score, 6),
        "verdict": verdict,
        "defect_type": det.defect_type,
        "defect_probs": {k: round(v, 6) for k, v in det.defect_probs.items()},
        "regions": [_region(g) for g in det.regions],
        "thresholds": None if t is None else t.model_dump(mode="json"),
        "candidate_words": list(det.defect_probs),
        "model_version": detector.model_version,
        "prompt_version": detector.prompt_version,
        # what chose it: QC_PROMPT_VERSION, the database's active version, or the ACTIVE file
        "prompt_version_source": detector.prompt_source,
    }


def _region(g) -> dict:
    return {
        "defect_type": g.defect_type,
        "area_px": g.area_px,
        "bbox": list(g.bbox),
        "score": round(g.score, 6),
        "mean_score": None if g.mean_score is None else round(g.mean_score, 6),
        "centroid": None if g.centroid is None else [round(c, 1) for c in g.centroid],
        "outline": [list(p) for p in g.outline],
    }


def _load_detector(settings, bar):
    """The detector, saying on stderr what is happening (loading takes seconds) and which source
    chose the prompt version (the same rule as the workers: qc_stream.stream.prompt_source)."""
    from qc_stream.inference.detector import Detector
    from qc_stream.stream.prompt_source import choose_prompt_version

    choice = choose_prompt_version(settings)
    if choice.note:
        _say(bar, f"warning: {choice.note}")
    if bar is not None:
        bar.note(f"loading {settings.backbone} and the prompt version...")
    detector = Detector.from_settings(settings, version=choice.version, source=choice.source)
    if bar is not None:
        bar.note(f"prompt version {detector.prompt_version} (from the {choice.source})")
    return detector


def _say(bar, text: str) -> None:
    if bar is not None:
        bar.note(text)
    else:
        typer.echo(text, err=True)


class _Progress:
    """A rich progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("predict", total=total)
        self.progress.start()

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


class _RunFolder:
    """``results.jsonl`` and ``results.csv`` of a run folder, written as the results come."""

    def __init__(self, folder: Path):
        import csv

        self.jsonl = (folder / "results.jsonl").open("w")
        self.csv_file = (folder / "results.csv").open("w", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=CSV_COLUMNS)
        self.csv.writeheader()

    def add(self, obj: dict) -> None:
        import json

        self.jsonl.write(json.dumps(obj) + "\n")
        t = obj.get("thresholds") or {}
        top = (obj.get("regions") or [None])[0] or {}
        self.csv.writerow(
            {
                "image": obj["image"],
                "verdict": obj.get("verdict", ""),
                "anomaly_score": obj.get("anomaly_score", ""),
                "defect_type": obj.get("defect_type") or "",
                "warn": t.get("warn", ""),
                "reject": t.get("reject", ""),
                "threshold_source": t.get("source", ""),
                "regions": len(obj.get("regions") or []) if "error" not in obj else "",
                "top_region_type": top.get("defect_type") or "",
                "top_region_bbox": " ".join(map(str, top.get("bbox") or [])),
                "top_region_score": top.get("score", ""),
                "prompt_version": obj.get("prompt_version", ""),
                "prompt_version_source": obj.get("prompt_version_source") or "",
                "overlay": obj.get("overlay", ""),
                "error": obj.get("error", ""),
            }
        )

    def close(self) -> None:
        self.jsonl.close()
        self.csv_file.close()


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
