"""Pipelined inference: while the device runs batch n, batch n+1 is prepared and batch n-1 finished.

``Detector.detect`` runs its three stages one after the other: ``prepare`` (CPU: resize, copy to
the device), ``forward`` (the device) and ``finish`` (CPU: wait for the host copies, label regions,
build the results). On a GPU the CPU stages leave the device idle for a large part of every batch;
``PipelinedDetector`` runs them on their own threads so the device only waits for what it must.

- ``run(batches)``: a stream of batches (the benchmark, a replay): results in order, one list per
  batch, with the three stages of consecutive batches overlapping.
- ``detect(images, products)``: one batch, the worker's call, split into ``chunks`` sub-batches that
  go through the same pipeline, so even a single batch overlaps its stages.

Results are those of ``Detector.detect`` on the same frames (the stages are the same code).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: detector.py imports this module at module level
    from qc_stream.inference.detector import Detector, DetectorOutput


class PipelinedDetector:
    """A ``Detector`` whose batches go through prepare / forward / finish on overlapping threads.

    Everything else (versions, thresholds, prompt swaps) is the wrapped detector's.
    """

    def __init__(self, detector: Detector, *, chunks: int = 2):
        if chunks < 1:
            raise ValueError("chunks must be at least 1")
        self.detector = detector
        self.chunks = chunks
        self._prepare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-prepare")
        self._finish_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-finish")

    def __getattr__(self, name: str):
        # model_version, prompt_version, thresholds_for, swap_prompts, encode_images, ...
        return getattr(self.detector, name)

    def close(self) -> None:
        self._prepare_pool.shutdown(wait=True)
        self._finish_pool.shutdown(wait=True)

    def detect(self, images: Sequence, products: Sequence[str | None]) -> list[DetectorOutput]:
        """``Detector.detect`` on ``images`` in ``chunks`` sub-batches whose stages overlap."""
        if len(images) != len(products):
            raise ValueError(f"{len(images)} images but {len(products)} products")
        n = len(images)
        if n == 0:
            return []
        step = -(-n // min(self.chunks, n))
        parts = [(images[i : i + step], products[i : i + step]) for i in range(0, n, step)]
        return [out for part in self.run(parts) for out in part]

    def run(
        self, batches: Iterable[tuple[Sequence, Sequence[str | None]]]
    ) -> Iterator[list[DetectorOutput]]:
        """One list of outputs per (images, products) batch, in order. While the caller's thread
        runs ``forward`` on batch n, one thread prepares batch n+1 and another finishes batch n-1."""
        det = self.detector
        source = iter(batches)

        def prepare_next():
            item = next(source, None)
            if item is None:
                return None
            images, products = item
            if len(images) != len(products):
                raise ValueError(f"{len(images)} images but {len(products)} products")
            if not len(images):
                return self._prepare_pool.submit(lambda: None)
            return self._prepare_pool.submit(det.prepare, images, products)

        pending = prepare_next()
        finishing = None
        try:
            while pending is not None:
                batch = pending.result()
                pending = prepare_next()
                result = det.forward(batch) if batch is not None else None
                if finishing is not None:
                    yield finishing.result()
                finishing = self._finish_pool.submit(
                    (lambda r: det.finish(r)) if result is not None else (lambda r: []), result
                )
            if finishing is not None:
                yield finishing.result()
                finishing = None
        finally:
            # The caller stopped early or a stage raised: let the stages in flight end before
            # leaving, so no thread still works on a batch nobody will read.
            for f in (pending, finishing):
                if f is not None:
                    f.exception()
