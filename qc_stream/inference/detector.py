"""The batch inference API: pictures in, ``Detection``s (score, type, regions) and maps out.

One ``Detector`` per process holds the frozen backbone and one prompt version. ``detect`` runs a
batch under ``torch.inference_mode`` (and autocast when ``QC_PRECISION`` asks for it); the model's
text features are cached per prompt version, so a batch costs one image forward. ``swap_prompts``
loads another prompt version and switches to it atomically between batches, together with its
calibrated verdict thresholds (``thresholds.json``, see ``qc_stream.dapo.thresholds``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from qc_stream.dapo.backbone import autocast, bf16_is_native, load_backbone, resolve_device
from qc_stream.dapo.checkpoint import active_version, load_prompt_version, train_command
from qc_stream.dapo.model import DapoModel
from qc_stream.dapo.thresholds import read_region_thresholds, version_thresholds
from qc_stream.domain.inspection import Detection, Thresholds
from qc_stream.domain.thresholds import (
    SCORE_TEMPERATURE,
    region_cut,
    resolve_region_threshold,
    resolve_with_source,
)
from qc_stream.domain.vocabulary import Vocabulary
from qc_stream.errors import ConfigError
from qc_stream.inference.decode import preprocess_batch
from qc_stream.inference.device_decode import EncodedFrame, preprocess_frames
from qc_stream.inference.device_maps import overlay_maps, resize_map, resize_types
from qc_stream.inference.pipeline import PipelinedDetector
from qc_stream.inference.regions import find_regions, scale_regions
from qc_stream.settings import Settings

log = logging.getLogger(__name__)

# QC_PROMPT_VERSION=untrained: seeded random prompts, the explicit opt-in for tests and smoke runs
# (without a prompt version a detector refuses to start).
UNTRAINED = "untrained"
# Long side (px) of the map on which regions are labelled, when the image is larger (see _regions).
REGION_WORK_PX = 512
# The untrained fallback is seeded, so the same image gets the same result in every process.
UNTRAINED_SEED = 0


@dataclass(frozen=True)
class _Prompts:
    """What one prompt version brings; swapped as a whole so a batch never sees a mix."""

    version: str
    model: object  # a PromptDetector: DapoModel, or a baseline saved as a version
    vocab: Vocabulary
    # Calibrated {product: (warn, reject)} of this version (its thresholds.json), {} when none.
    thresholds: dict = field(default_factory=dict)
    # Calibrated {product: pixel threshold of regions}, {} when none.
    region_thresholds: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class DetectorOutput:
    """One image's result. The maps are resized to the image's own size on first access only (most
    callers, e.g. the workers, never need them)."""

    detection: Detection
    words: tuple[str, ...]
    size: tuple[int, int]  # (width, height) of the image
    # [s, s] float32 anomaly map as the model produced it, s = min(S, OVERLAY_MAP_PX) (device_maps)
    model_map: np.ndarray
    model_type_map: np.ndarray  # [s, s] int16 index into ``words``
    # (warn, reject) that applied to this image (same prompt version as the scores); see thresholds_for.
    # ``detection.thresholds`` says where they came from.
    thresholds: tuple[float, float] | None = None

    @cached_property
    def anomaly_map(self) -> np.ndarray:
        """[h, w] float32 in 0..1 at the original image size."""
        return _resize(self.model_map, self.size, nearest=False)

    @cached_property
    def type_map(self) -> np.ndarray:
        """[h, w] int16 index into ``words`` (argmax over the candidate types) at the original size."""
        return _resize(self.model_type_map, self.size, nearest=True)


@dataclass(frozen=True, eq=False)
class ModelInput:
    """A batch after ``Detector.prepare``: on the device, with the prompt version it will use."""

    prompts: _Prompts
    x: torch.Tensor  # [B, 3, S, S] normalised, on the device
    candidates: torch.Tensor  # [B, T] bool on the device
    host_candidates: np.ndarray  # the same on the host
    sizes: list[tuple[int, int]]  # (width, height) of each image
    products: list[str | None]


@dataclass(frozen=True, eq=False)
class ModelOutput:
    """A batch after ``Detector.forward``: host copies of what every result needs (score [B], map
    peak [B], image type probabilities [B, T], map and type index at ``OVERLAY_MAP_PX`` at most),
    complete once ``done`` (a CUDA event) is; the full maps stay on the device for the regions."""

    batch: ModelInput
    host: tuple[torch.Tensor, ...]
    amap: torch.Tensor  # [B, S, S] anomaly map (with headroom) on the device
    type_idx: torch.Tensor  # [B, S, S] int16 type index on the device
    done: object = None


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:

    if a.shape == (size[1], size[0]):
        return a
    return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


class Detector:
    def __init__(
        self, backbone, prompts: _Prompts, settings: Settings, prompt_source: str | None = None
    ):
        self.backbone = backbone
        self.settings = settings
        self._prompts = prompts
        # What chose the prompt version it started on: "QC_PROMPT_VERSION", "database" or
        # "ACTIVE file" (see qc_stream.stream.prompt_source); "swap" after swap_prompts.
        self.prompt_source = prompt_source
        self._lock = threading.Lock()  # guards the swap of ``_prompts``; a batch takes one snapshot
        self._device = backbone.device
        self._pipelined = None
        self._side_stream = None  # CUDA stream of finish's region maps (see _finish_stream)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(
        cls, settings: Settings, *, version: str | None = None, source: str | None = None
    ) -> Detector:
        """Backbone from ``QC_BACKBONE``/``QC_PRETRAINED``/``QC_IMAGE_SIZE`` on ``QC_DEVICE``; prompt
        version ``version`` chosen by ``source`` (``qc_stream.stream.prompt_source``), else
        ``QC_PROMPT_VERSION``, else the models folder's ACTIVE file. ``untrained`` runs seeded random
        prompts; no version at all is a ``ConfigError`` naming the ``qc-stream train`` command."""
        device = resolve_device(settings.device)
        if settings.precision == "fp16" and device.type == "cpu":
            raise ConfigError("QC_PRECISION=fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
        if settings.precision == "bf16" and not bf16_is_native(device):
            log.warning(
                "QC_PRECISION=bf16 on a CPU without AVX-512 BF16 or AMX: PyTorch emulates it, "
                "which is several times slower than fp32"
            )
        backbone = load_backbone(
            settings.backbone,
            pretrained=settings.pretrained,
            image_size=settings.image_size,
            models_dir=settings.models_dir,
            device=device,
        )
        if version is None:
            version = settings.prompt_version or _active_version(settings.models_dir)
            source = "QC_PROMPT_VERSION" if settings.prompt_version else "ACTIVE file"
        if version == UNTRAINED:
            prompts = _untrained(backbone)
        elif version:
            prompts = _load_prompts(version, backbone, settings.models_dir)
        else:
            raise ConfigError(_no_prompt_version(backbone, settings.models_dir))
        detector = cls(backbone, prompts, settings, source)
        detector._warm(prompts)
        return detector

    @classmethod
    def for_version(cls, backbone, version: str, settings: Settings) -> Detector:
        """A detector on an already loaded ``backbone`` with prompt version ``version`` (a name
        under ``settings.models_dir`` or a folder), e.g. for the benchmark."""
        prompts = _load_prompts(version, backbone, settings.models_dir)
        detector = cls(backbone, prompts, settings)
        detector._warm(prompts)
        return detector

    # ------------------------------------------------------------------ identity
    @property
    def backbone_id(self) -> str:
        return self.backbone.backbone_id

    @property
    def model_version(self) -> str:
        """The backbone that decided (``<name>@<weights hash>``); prompts are versioned separately."""
        return self.backbone.backbone_id

    @property
    def prompt_version(self) -> str:
        return self._prompts.version

    def words_for(self, product: str | None) -> tuple[str, ...]:
        return self._prompts.vocab.words_for(product)

    def unknown_product(self, product: str | None) -> str | None:
        """Why ``product`` cannot be inspected with the current prompt version, or None when it can:
        the version's vocabulary lists it, or QC_GENERIC_PRODUCTS allows its generic words (no
        product at all also means the generic words)."""
        prompts = self._prompts
        generic = self.settings.generic_products
        if product is None or prompts.vocab.products.get(product) or "*" in generic:
            return None
        if product in generic:
            return None
        return (
            f"unknown product {product!r}: prompt version {prompts.version} has no defect words "
            "for it (register its defect types and retrain, or list it in QC_GENERIC_PRODUCTS "
            "to inspect it with the generic vocabulary)"
        )

    @property
    def calibrated_thresholds(self) -> dict[str, tuple[float, float]]:
        """The current prompt version's calibrated ``{product: (warn, reject)}`` ({} when none)."""
        return dict(self._prompts.thresholds)

    def thresholds_for(
        self, product: str | None, settings: Settings | None = None
    ) -> tuple[float, float]:
        """(warn, reject) for ``product``: ``QC_THRESHOLDS`` > this version's calibrated thresholds >
        ``QC_WARN/REJECT_THRESHOLD`` (``settings`` default: the detector's own)."""
        return _thresholds_for(product, settings or self.settings, self._prompts)

    # ------------------------------------------------------------------ prompts
    def swap_prompts(self, version: str) -> None:
        """Load ``version`` (name under models/prompts/ or a folder) and use it from the next batch.

        Loading happens outside the lock, so a concurrent ``detect`` finishes on the old version;
        a version that fails to load raises and leaves the current one in place.
        """
        prompts = _load_prompts(version, self.backbone, self.settings.models_dir)
        self._warm(prompts)
        with self._lock:
            self._prompts = prompts
            self.prompt_source = "swap"

    def _warm(self, prompts: _Prompts) -> None:
        """Encode the vocabulary now (cached per version) so the first batch costs no text forward;
        with QC_COMPILE, compile the version's image tower (compiled on its first batch)."""
        visual = getattr(prompts.model, "visual", None)
        if self.settings.compile and isinstance(visual, torch.nn.Module):
            visual.compile(dynamic=False)
        with torch.inference_mode(), autocast(self._device, self.settings.precision):
            prompts.model.text_features(list(prompts.vocab.words))

    # ------------------------------------------------------------------ inference
    def detect(
        self, images: Sequence[Image.Image], products: Sequence[str | None]
    ) -> list[DetectorOutput]:
        """One batched forward for ``images`` (RGB pictures of any size); one output per image."""
        if len(images) != len(products):
            raise ValueError(f"{len(images)} images but {len(products)} products")
        if not images:
            return []
        if self.settings.pipeline_chunks > 1 and len(images) > 1:
            return self._pipeline().detect(images, products)
        return self.finish(self.forward(self.prepare(images, products)))

    def _pipeline(self):
        """The PipelinedDetector over this detector (QC_PIPELINE_CHUNKS), made on first use."""
        if self._pipelined is None:
            self._pipelined = PipelinedDetector(self, chunks=self.settings.pipeline_chunks)
        return self._pipelined

    # ``detect`` in three stages, so that a pipeline (qc_stream.inference.pipeline) can run them on
    # different batches at once: prepare (CPU: resize, copy to the device), forward (the device:
    # the model and the reductions the results need), finish (CPU: region labelling, results).
    def prepare(
        self, images: Sequence[Image.Image], products: Sequence[str | None], x=None
    ) -> ModelInput:
        """The batch's input tensor on the device (``x`` when the caller made it, e.g. decoded on
        the GPU) and its candidate types, with one snapshot of the prompt version."""
        with self._lock:
            prompts = self._prompts
        words = prompts.vocab.words
        allowed = [set(prompts.vocab.words_for(p)) for p in products]
        candidates = torch.tensor([[w in a for w in words] for a in allowed], dtype=torch.bool)
        return ModelInput(
            prompts=prompts,
            x=self._input(images) if x is None else x,
            candidates=candidates.to(self._device, non_blocking=True),
            host_candidates=candidates.numpy(),
            sizes=[im.size for im in images],
            products=list(products),
        )

    def forward(self, batch: ModelInput) -> ModelOutput:
        """The model and its reductions on the device; the host copies of the small results are
        started (pinned, non-blocking on CUDA) and waited for in ``finish``."""
        candidates = batch.candidates
        with torch.inference_mode(), autocast(self._device, self.settings.precision):
            out = batch.prompts.model(batch.x, list(batch.prompts.vocab.words), candidates)
        with torch.inference_mode():
            score = _image_score(out)
            amap = _map_with_headroom(out.anomaly_map)  # [B, S, S]
            # Non-candidates get -1 so a pixel where every type has probability 0 still names a
            # candidate.
            type_probs = out.type_map_probs.float().masked_fill(~candidates[:, :, None, None], -1.0)
            type_idx = type_probs.argmax(dim=1).to(torch.int16)  # [B, S, S]
            # The model's per-image type distribution (anomalous-region evidence blended with the
            # CLS one).
            image_types = out.image_type_probs.float().masked_fill(~candidates, 0.0)
            peak = amap.amax(dim=(1, 2))
            small_map, small_types = overlay_maps(amap, type_idx)
            host = tuple(
                t.to("cpu", non_blocking=True)
                for t in (score, peak, image_types, small_map, small_types)
            )
        done = None
        if self._device.type == "cuda":
            done = torch.cuda.Event()
            done.record()
        return ModelOutput(batch, host, amap, type_idx, done)

    def finish(self, result: ModelOutput) -> list[DetectorOutput]:
        """Wait for the host copies, then build one output per image; the frames that get regions
        have their maps resized on the device and copied back, and labelled here."""
        if result.done is not None:
            result.done.synchronize()
        score, peak, image_types, small_map, small_types = (t.numpy() for t in result.host)
        batch = result.batch
        outputs = []
        for i in range(len(batch.sizes)):
            explained = explain_thresholds(batch.products[i], self.settings, batch.prompts)
            flagged = float(score[i]) >= explained.warn
            cut = region_cut(float(peak[i]), explained.region, flagged=flagged)
            regions = self._regions(result, i, cut) if flagged and cut else []
            outputs.append(
                self._output(
                    batch,
                    i,
                    float(score[i]),
                    image_types[i],
                    explained,
                    regions,
                    small_map[i],
                    small_types[i],
                )
            )
        return outputs

    def encode_images(self, images: Sequence[Image.Image]):
        """The backbone's image embeddings alone, with ``detect``'s preprocessing and precision: the
        floor any CLIP-based detector pays (``qc-stream bench`` times it beside ``detect``)."""
        x = self._input(images)
        with torch.inference_mode(), autocast(self._device, self.settings.precision):
            return self.backbone.model.encode_image(x)

    def _input(self, images: Sequence[Image.Image | EncodedFrame]):
        """The normalised batch on the device: frames left encoded (QC_DEVICE_DECODE) are decoded
        and resized there, pictures resized on the CPU threads."""
        bb = self.backbone
        if any(isinstance(im, EncodedFrame) for im in images):
            x, _ = preprocess_frames(images, bb.image_size, bb.mean, bb.std, device=self._device)
            return x
        return preprocess_batch(images, bb.image_size, bb.mean, bb.std, device=self._device)

    def _output(self, batch, i, score, image_types, explained, regions, small_map, small_types):
        words = batch.prompts.vocab.words
        candidates = batch.host_candidates[i]
        total = float(image_types.sum())
        probs = image_types / total if total > 0 else candidates / max(int(candidates.sum()), 1)
        defect_probs = {words[j]: float(probs[j]) for j in np.flatnonzero(candidates)}
        # judged normal: no defect to name (and no region, see finish)
        defect_type = words[int(np.argmax(probs))] if score >= explained.warn else None
        detection = Detection(
            anomaly_score=float(np.clip(score, 0.0, 1.0)),
            defect_type=defect_type,
            defect_probs=defect_probs,
            regions=regions,
            thresholds=explained,
        )
        thresholds = (explained.warn, explained.reject)
        return DetectorOutput(detection, words, batch.sizes[i], small_map, small_types, thresholds)

    def _regions(self, result: ModelOutput, i: int, threshold: float):
        """Regions of image ``i`` in image pixels, found on its map at a working resolution of at
        most ``max(S, REGION_WORK_PX)`` on the long side: the map is an upsampled ViT patch grid,
        so finer labelling would add cost (a full 12 MP frame) and no detail. The map is resized on
        the device and only this image's working maps are copied back; the connected components
        are labelled here, on the CPU (a device labelling needs hundreds of propagation passes on
        such a map, and the number of regions is only known on the host)."""
        w, h = result.batch.sizes[i]
        side = result.amap.shape[-1]
        scale = min(1.0, max(side, REGION_WORK_PX) / max(w, h))
        ww, wh = max(1, round(w * scale)), max(1, round(h * scale))
        sx, sy = ww / w, wh / h
        with torch.inference_mode(), self._finish_stream(result):
            work_map = resize_map(result.amap[i : i + 1], (ww, wh))[0].cpu().numpy()
            work_types = resize_types(result.type_idx[i], (ww, wh)).cpu().numpy()
        min_area = max(1, int(np.ceil(self.settings.region_min_area_px * sx * sy)))
        words = result.batch.prompts.vocab.words
        found = find_regions(
            work_map, threshold, min_area=min_area, type_map=work_types, words=words
        )
        return found if (ww, wh) == (w, h) else scale_regions(found, sx, sy, w, h)

    def _finish_stream(self, result: ModelOutput):
        """On CUDA, a side stream that waits for this batch only, so the finish thread's resizes and
        copies do not queue behind the next batch's forward on the default stream."""
        if result.done is None:
            return contextlib.nullcontext()
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self._device)
        self._side_stream.wait_event(result.done)
        return torch.cuda.stream(self._side_stream)


def _image_score(out) -> torch.Tensor:
    """[B] image scores with headroom: ``sigmoid(logit / SCORE_TEMPERATURE)`` of the model's
    abnormal-minus-normal logit (see qc_stream.domain.thresholds); a detector without logits gives
    its probability's logit, which is the same number."""
    logits = getattr(out, "image_logits", None)
    if logits is not None and logits.ndim == 2 and logits.shape[1] == 2:
        logit = (logits[:, 1] - logits[:, 0]).float()
    else:
        p = out.image_score.float().clamp(1e-7, 1 - 1e-7)
        logit = torch.log(p / (1 - p))
    return torch.sigmoid(logit / SCORE_TEMPERATURE)


def _map_with_headroom(anomaly_map: torch.Tensor) -> torch.Tensor:
    """The anomaly map on the image score's scale: ``sigmoid(logit(p) / SCORE_TEMPERATURE)`` per
    pixel. The model's per-pixel probabilities sit at ~1e-7 on good parts and ~0.4 on strong
    defects; on this scale good parts sit at ~0.03 and strong defects at ~0.45, so one pixel
    threshold per product has room on both sides (same ranking: pixel metrics are unchanged)."""
    p = anomaly_map.float().clamp(1e-12, 1 - 1e-7)
    return torch.sigmoid(torch.log(p / (1 - p)) / SCORE_TEMPERATURE)


def _thresholds_for(
    product: str | None, settings: Settings, prompts: _Prompts
) -> tuple[float, float]:
    t = explain_thresholds(product, settings, prompts)
    return t.warn, t.reject


def explain_thresholds(product: str | None, settings: Settings, prompts: _Prompts) -> Thresholds:
    """Verdict and region thresholds for ``product`` with their sources (QC_THRESHOLDS >
    calibrated for this version > global; QC_REGION_THRESHOLD > calibrated > built-in)."""
    default = (settings.warn_threshold, settings.reject_threshold)
    (warn, reject), source = resolve_with_source(
        product, settings.product_thresholds, prompts.thresholds, default, prompts.version
    )
    region, region_source = resolve_region_threshold(
        product, settings.region_threshold, prompts.region_thresholds, prompts.version
    )
    return Thresholds(
        warn=warn, reject=reject, source=source, region=region, region_source=region_source
    )


# ---------------------------------------------------------------------- prompt versions


def _active_version(models_dir: Path) -> str | None:
    return active_version(models_dir)


def _load_prompts(version: str, backbone, models_dir: Path) -> _Prompts:
    loaded = load_prompt_version(version, backbone, models_dir=models_dir)
    vocab = Vocabulary.from_manifest(loaded.manifest.get("vocabulary") or {})
    return _Prompts(
        loaded.version,
        loaded.model.eval(),
        vocab,
        version_thresholds(loaded.path, models_dir),
        version_thresholds(loaded.path, models_dir, reader=read_region_thresholds),
    )


def _no_prompt_version(backbone, models_dir: Path) -> str:
    return (
        f"no prompt version for backbone {backbone.name}: QC_PROMPT_VERSION is unset and "
        f"{Path(models_dir) / 'prompts'} has no ACTIVE version; train one with "
        f"`{train_command(backbone)} --activate` "
        "(QC_PROMPT_VERSION=untrained runs random prompts, for tests and smoke runs only)"
    )


def _untrained(backbone) -> _Prompts:
    log.warning(
        "QC_PROMPT_VERSION=untrained: random prompts (for tests and smoke runs); scores and defect "
        "types are meaningless (`%s --activate` trains a version)",
        train_command(backbone),
    )

    vocab = Vocabulary.catalog_default()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        model = DapoModel(backbone, vocabulary=vocab.words)
    model.product_words = {p: list(ws) for p, ws in vocab.products.items()}
    return _Prompts(UNTRAINED, model.eval(), vocab)
