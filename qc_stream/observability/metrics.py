"""Prometheus metrics of a worker. Import and update these; the health server exposes them."""

from prometheus_client import Counter, Gauge, Histogram

FRAMES_PROCESSED = Counter(
    "qc_frames_processed_total", "Frames inspected and stored", ["product", "verdict"]
)
DEAD_LETTERS = Counter("qc_dead_letters_total", "Frames sent to qc.deadletter", ["reason"])
BATCH_LATENCY = Histogram(
    "qc_batch_latency_seconds",
    "Wall time of one inference micro-batch (decode + model + post-processing)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "qc_batch_size_frames", "Frames per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
CONSUMER_LAG = Gauge(
    "qc_consumer_lag_records", "Records behind the end of qc.frames", ["partition"]
)
PROMPT_VERSION = Gauge(
    "qc_prompt_version_info", "Active prompt version (value 1)", ["prompt_version"]
)
WORKER_READY = Gauge(
    "qc_worker_ready", "1 while the worker is ready (partitions assigned, model loaded)"
)
WORKER_RETRIES = Counter(
    "qc_worker_retries_total",
    "Failed attempts to store or publish a batch that the worker waited out and retried",
    ["what"],
)
RECORDS_SKIPPED = Counter(
    "qc_records_skipped_total",
    "Outputs the broker refused for good (e.g. a dead letter still too large): logged and skipped",
    ["kind"],
)
PROMPT_SWAP_REFUSED = Counter(
    "qc_prompt_swap_refused_total",
    "qc.model-updates announcements refused (bad name, unregistered, digest mismatch, ...)",
    ["reason"],
)
FRAME_STORE_FAILURES = Counter(
    "qc_frame_store_failures_total",
    "Frames the worker could not keep in the frame store (store missing, full, unwritable); "
    "inspection goes on without them",
)
FRAMES_RETAINED = Counter(
    "qc_frames_retained_total", "Frames kept in the frame store for review", ["verdict"]
)
