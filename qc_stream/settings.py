"""The one settings object, read from ``QC_*`` environment variables and validated at start-up.

Entry points call :func:`load_settings`; a bad value becomes a one-line ``ConfigError`` naming the
variable, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    Json,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qc_stream.errors import ConfigError
from qc_stream.paths import default_models_dir, seed_models_dir, shipped_models_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
# QC_MODELS_DIR's default: a per-user folder seeded from the shipped assets (never the source tree).
DEFAULT_MODELS_DIR = default_models_dir()
# The read-only assets that came with the code: the checkout's models/ or the wheel's copy.
SHIPPED_MODELS_DIR = shipped_models_dir()
# The shipped default backbone: pretrained in 57 minutes on 2 CPU cores (its MODEL_CARD.md says how).
# `qc-clip-tiny` beside it is the earlier 5-minute GPU run, kept with the prompt versions made for it.
DEFAULT_BACKBONE = "qc-clip-tiny-cpu"

# Kafka record overhead we reserve on top of the frame bytes (headers, key, batch framing).
KAFKA_OVERHEAD_BYTES = 64 * 1024

BrokerProfile = Literal["production", "embedded"]

PAIR_RULE = "expected [warn, reject] with 0 <= warn <= reject <= 1"


def _warn_reject(value, handler) -> tuple[float, float]:
    """One message for every way a [warn, reject] pair can be wrong (shape, range or order)."""
    try:
        warn, reject = handler(value)
    except ValidationError:
        raise ValueError(PAIR_RULE) from None
    if warn > reject:
        raise ValueError(PAIR_RULE)
    return warn, reject


def _json_object(value, handler) -> dict:
    if not isinstance(value, dict):
        raise ValueError('expected a JSON object like {"pill": [0.4, 0.7]}')
    return handler(value)


Fraction = Annotated[float, Field(ge=0, le=1)]
ThresholdPair = Annotated[tuple[Fraction, Fraction], WrapValidator(_warn_reject)]
ProductThresholds = Annotated[dict[str, ThresholdPair], WrapValidator(_json_object)]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


def database_identity(url: str) -> str:
    """10 hex digits naming a database: its URL without the password (a SQLite path made
    absolute), hashed. Two deployments on one Redis get different Redis key prefixes from it."""
    import hashlib
    import os
    import re

    ident = re.sub(r"://([^:/@]*):[^@]*@", r"://\1@", url)
    head, sep, path = ident.partition(":///")
    if head.startswith("sqlite") and sep and path and not path.startswith(":memory:"):
        ident = f"{head}:///{os.path.abspath(path)}"
    return hashlib.sha256(ident.encode()).hexdigest()[:10]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QC_", extra="ignore", frozen=True)

    # --- connections ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "sqlite:///qc-stream.db"
    redis_url: str | None = "redis://127.0.0.1:6379/0"
    # Key prefix in Redis; unset: "qc:<10 hex of the database's identity>:" so deployments (and
    # test databases) sharing one Redis never read each other's keys (see cache_prefix).
    redis_prefix: str | None = None
    cache_ttl_s: int = Field(60, ge=1, le=86_400)
    # `qc-stream db prune`: frames (inspections, frame ids) are kept this many full UTC days
    # besides today, the per-minute roll-ups behind the dashboards this many.
    retention_days: int = Field(30, ge=1, le=36_500)
    rollup_retention_days: int = Field(400, ge=1, le=36_500)

    # --- model ---
    models_dir: Path = DEFAULT_MODELS_DIR
    # open_clip architecture name, or the name of a config under models/backbones/.
    backbone: str = DEFAULT_BACKBONE
    # open_clip pretrained tag, a local checkpoint path, "none" (random weights), or None: the
    # weights shipped with the backbone under models/backbones/<name>/.
    pretrained: str | None = None
    image_size: int | None = Field(None, ge=32, le=1024)
    prompt_version: str | None = None  # None: the active version
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    # Pipelined inference (qc_stream.inference.pipeline): each batch goes through the detector in
    # this many sub-batches whose CPU stages (resize, region labelling) overlap the model's forward;
    # 0: off, one sequential pass per batch.
    pipeline_chunks: int = Field(0, ge=0, le=64)
    # torch.compile of the image tower (each new batch shape compiles first: a slow first batch).
    compile: bool = False
    # JPEG decode and resize on the model's device (qc_stream.inference.device_decode) in the
    # worker and `predict`: auto = on when the model runs on CUDA; frames the device cannot decode
    # (PNG, 16-bit, CMYK, progressive, EXIF) take the CPU path either way.
    device_decode: Literal["auto", "on", "off"] = "auto"
    # Defect regions: connected pixels whose anomaly value reaches this, of at least this many pixels
    # (pixels of the original image).
    # Unset: each product's threshold calibrated for the prompt version (else 0.05); set: an override.
    region_threshold: float | None = Field(None, gt=0, le=1)
    region_min_area_px: int = Field(16, ge=1)

    # --- streaming ---
    app_id: str = "qc-stream"
    topic_partitions: int = Field(4, ge=1, le=1024)
    topic_replication_factor: int = Field(1, ge=1, le=16)
    batch_size: int = Field(16, ge=1, le=1024)
    batch_timeout_s: float = Field(0.05, gt=0, le=10)
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # Client-side Kafka limits; must carry a whole frame plus record overhead.
    kafka_max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # A dead letter carries the failed record's value only up to this many bytes (its full size and
    # sha256 go in headers), so even a record too big for the broker can be dead-lettered.
    deadletter_max_bytes: int = Field(1024 * 1024, ge=0)
    # A worker that cannot store or publish a batch retries it (holding it unacked) after
    # base * 2^n seconds, at most cap; /healthz turns 503 once one batch has waited stuck_s.
    worker_retry_base_s: float = Field(0.5, gt=0, le=60)
    worker_retry_cap_s: float = Field(10.0, gt=0, le=600)
    worker_stuck_s: float = Field(300.0, gt=0, le=86_400)
    # After SIGTERM/SIGINT a worker finishes its batch and leaves the group; if that has not ended
    # within this many seconds (broker or database down), it exits anyway (the batch is replayed).
    # Keep it below the pod's terminationGracePeriodSeconds.
    worker_shutdown_grace_s: float = Field(30.0, gt=0, le=3600)
    broker_profile: BrokerProfile = "production"
    # Camera producers: how long to retry an unreachable broker before giving up, and the record
    # compression ("none" suits JPEG/PNG frames, which are already compressed).
    producer_connect_timeout_s: float = Field(30.0, ge=0, le=3600)
    # A camera keeps every frame until the broker acknowledges it and re-sends the backlog after a
    # broker restart; it waits when the backlog is full, and exits with an error only after this
    # long without a single acknowledgement.
    producer_give_up_s: float = Field(120.0, gt=0, le=86_400)
    producer_buffer_frames: int = Field(1000, ge=1, le=1_000_000)
    producer_buffer_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    kafka_compression: Literal["none", "gzip"] = "none"
    # Kafka client security (every client: cameras, workers, registry, admin). TLS needs the
    # cluster CA (QC_KAFKA_SSL_CAFILE); SASL needs mechanism, user and password together; a client
    # certificate (mTLS) needs both QC_KAFKA_SSL_CERTFILE and QC_KAFKA_SSL_KEYFILE.
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = Field(None, min_length=1)
    kafka_sasl_password: str | None = Field(None, min_length=1)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # Workers write an overlay PNG (heat map + labels) of every rejected frame here; None: off.
    overlay_dir: Path | None = None
    broker_session_timeout_s: float | None = Field(None, gt=0)
    broker_heartbeat_interval_s: float | None = Field(None, gt=0)
    broker_rebalance_timeout_s: float | None = Field(None, gt=0)
    # How often Kafka clients refresh topic metadata even without errors. A worker (the group leader)
    # notices a topic's new partition count only then, and rejoins to take the new partitions:
    # short on the embedded broker, whose restart recreates the topics (auto-created ones with its
    # default of 4 partitions); Kafka's 300 s otherwise. None: by QC_BROKER_PROFILE.
    broker_metadata_max_age_s: float | None = Field(None, gt=0, le=86_400)
    # A worker that holds no batch, acks nothing and sees frames waiting for its group (lag > 0)
    # for this long is stalled (a broker restart can leave the Kafka client consuming nothing):
    # /healthz turns 503, partitions committed past their log end are rewound, else the stacks
    # are logged and the worker restarts itself in place (same pid; unacked frames are replayed).
    # None: by QC_BROKER_PROFILE; 0: off (stream/stall.py).
    stall_restart_s: float | None = Field(None, ge=0, le=86_400)
    # /healthz, /readyz, /metrics of a worker; 0 picks a free port, -1 disables.
    health_port: int = Field(8000, ge=-1, le=65535)
    # /healthz answers 503 when the worker's event loop or inference thread made no heartbeat for
    # this long (the liveness probe then restarts the pod); above the slowest batch.
    health_stale_s: float = Field(120.0, gt=0, le=3600)
    # Kafka static group membership (group.instance.id), unique per worker; Kubernetes sets it to
    # the pod name. A worker that restarts within the session timeout gets its partitions back
    # without a rebalance. None: dynamic membership.
    group_instance_id: str | None = Field(None, min_length=1, max_length=249)

    # --- verdicts ---
    warn_threshold: float = Field(0.5, ge=0, le=1)
    reject_threshold: float = Field(0.8, ge=0, le=1)
    # JSON object product -> [warn, reject], e.g. {"pill": [0.4, 0.7]}; parsed into that dict.
    thresholds: Json[ProductThresholds] = "{}"

    # --- registry ---
    # Comma list of products defect types may be registered for (QC_PRODUCTS=pill,screw, not
    # JSON: hence NoDecode); empty: any product.
    products: Annotated[frozenset[str], NoDecode] = frozenset()
    # Comma list of products that may be inspected with the prompt version's generic vocabulary
    # (every word) although the version has no words of their own; "*": any product. Others
    # unknown to the version are refused (predict exit 2, a dead letter in the worker).
    generic_products: Annotated[frozenset[str], NoDecode] = frozenset()
    # The qc.defect-types listener waits this long after the last change before refreshing.
    registry_debounce_s: float = Field(2.0, ge=0, le=3600)
    # Retrain gate: a candidate is refused when a holdout metric drops more than this (absolute).
    retrain_tolerance: float = Field(0.02, ge=0, le=1)

    # --- dashboards (Grafana) ---
    grafana_url: str | None = None  # e.g. http://grafana:3000
    grafana_token: str | None = None  # service-account token (Admin: it creates the datasource)
    grafana_folder: str = "qc-stream"
    # Postgres URL Grafana's datasource logs in with (the read-only role); default: QC_DATABASE_URL.
    grafana_db_url: str | None = None
    grafana_timeout_s: float = Field(10.0, gt=0, le=300)

    # --- review station (frame store + `qc-stream review`) ---
    # Workers keep the bytes (and overlay) of every warn/reject frame and of this fraction of ok
    # frames (chosen by a hash of the frame id, so a replay picks the same frames) in the frame
    # store; None: frames are not kept.
    frame_store_dir: Path | None = None
    review_sample_ok: Fraction = 0.02
    # `qc-stream review cleanup` removes kept frames older than this many days, then the oldest
    # until the store holds at most this many bytes.
    frame_store_max_days: int = Field(30, ge=1, le=36_500)
    frame_store_max_bytes: int = Field(20 * 1024**3, ge=1024)
    # Signs the review station's session cookies; unset: a random key per process (sessions end
    # when it restarts). Several replicas need the same key.
    review_secret: str | None = Field(None, min_length=16)
    # Failed logins per user name and client address within a minute before logins are refused.
    review_login_attempts: int = Field(5, ge=1, le=1000)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(v)
        except ArgumentError:
            raise ValueError(
                f"not a database URL: {v!r} (e.g. postgresql+psycopg://user@host/db)"
            ) from None
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ValueError(
                f"unsupported database {url.get_backend_name()!r}: use postgresql or sqlite"
            )
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v in (None, "", "none", "off"):
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a Redis URL: {v!r} (e.g. redis://127.0.0.1:6379/0, or 'off')")
        return v

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, v: str) -> str:
        for hostport in v.split(","):
            host, _, port = hostport.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"not host:port: {hostport!r} (e.g. 127.0.0.1:9092)")
        return v

    @field_validator("products", "generic_products", mode="before")
    @classmethod
    def _split_products(cls, v):
        if isinstance(v, str):
            return frozenset(p.strip() for p in v.split(",") if p.strip())
        return v

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.warn_threshold > self.reject_threshold:
            raise ValueError("QC_WARN_THRESHOLD must not exceed QC_REJECT_THRESHOLD")
        if self.kafka_max_request_bytes < self.max_frame_bytes + KAFKA_OVERHEAD_BYTES:
            raise ValueError(
                f"QC_KAFKA_MAX_REQUEST_BYTES={self.kafka_max_request_bytes} cannot carry a frame of "
                f"QC_MAX_FRAME_BYTES={self.max_frame_bytes} plus {KAFKA_OVERHEAD_BYTES} bytes of "
                "record overhead; raise the request limit or lower the frame limit"
            )
        if self.deadletter_max_bytes > self.kafka_max_request_bytes - KAFKA_OVERHEAD_BYTES:
            raise ValueError(
                f"QC_DEADLETTER_MAX_BYTES={self.deadletter_max_bytes} must leave "
                f"{KAFKA_OVERHEAD_BYTES} bytes of headroom below "
                f"QC_KAFKA_MAX_REQUEST_BYTES={self.kafka_max_request_bytes}"
            )
        if self.worker_retry_base_s > self.worker_retry_cap_s:
            raise ValueError("QC_WORKER_RETRY_BASE_S must not exceed QC_WORKER_RETRY_CAP_S")
        self._check_kafka_security()
        return self

    def _check_kafka_security(self) -> None:
        """Refuse half-set client security: it would connect in the clear or fail at the broker."""
        protocol = self.kafka_security_protocol
        sasl = {
            "QC_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "QC_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "QC_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if protocol.startswith("SASL_"):
            missing = [k for k, v in sasl.items() if v is None]
            if missing:
                raise ValueError(
                    f"QC_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}"
                )
        elif given := [k for k, v in sasl.items() if v is not None]:
            raise ValueError(
                f"{', '.join(given)} set but QC_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                "SASL; set it to SASL_SSL"
            )
        tls = {
            "QC_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "QC_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "QC_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if protocol not in ("SSL", "SASL_SSL"):
            if given := [k for k, v in tls.items() if v is not None]:
                raise ValueError(
                    f"{', '.join(given)} set but QC_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                    "TLS; set it to SSL or SASL_SSL"
                )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError(
                "a client certificate needs both QC_KAFKA_SSL_CERTFILE and QC_KAFKA_SSL_KEYFILE"
            )

    # --- derived ---
    @property
    def cache_prefix(self) -> str:
        """``QC_REDIS_PREFIX``, else one derived from the database identity (``database_identity``)."""
        if self.redis_prefix:
            return self.redis_prefix
        return f"qc:{database_identity(self.database_url)}:"

    @property
    def product_thresholds(self) -> dict[str, tuple[float, float]]:
        return self.thresholds

    @property
    def allowed_products(self) -> frozenset[str] | None:
        """Products the registry accepts, or None when any product is allowed (QC_PRODUCTS empty)."""
        return self.products or None

    def thresholds_for(self, product: str) -> tuple[float, float]:
        return self.product_thresholds.get(product, (self.warn_threshold, self.reject_threshold))

    @property
    def metadata_max_age_s(self) -> float:
        """Seconds between forced metadata refreshes (QC_BROKER_METADATA_MAX_AGE_S, else by profile)."""
        if self.broker_metadata_max_age_s is not None:
            return self.broker_metadata_max_age_s
        return 3.0 if self.broker_profile == "embedded" else 300.0

    @property
    def stall_restart_after_s(self) -> float | None:
        """Seconds of stall before a worker restarts itself (QC_STALL_RESTART_S, else by profile:
        10 s on the embedded broker, 60 s otherwise: above a slow CPU batch or a prompt swap)."""
        if self.stall_restart_s is not None:
            return self.stall_restart_s or None
        return 10.0 if self.broker_profile == "embedded" else 60.0

    @property
    def group_timeouts(self) -> tuple[float, float, float]:
        """(session, heartbeat, rebalance) seconds: short on the embedded broker, Kafka-sane otherwise."""
        if self.broker_profile == "embedded":
            defaults = (3.0, 0.5, 3.0)
        else:
            defaults = (45.0, 3.0, 60.0)
        return (
            self.broker_session_timeout_s or defaults[0],
            self.broker_heartbeat_interval_s or defaults[1],
            self.broker_rebalance_timeout_s or defaults[2],
        )


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field, *inside = e["loc"] or ("",)
        name = f"QC_{str(field).upper()}" if field else "settings"
        if e["type"] == "json_invalid":
            msg = f"not JSON: {e['ctx']['error']}"
        else:
            msg = e["msg"].removeprefix("Value error, ")
        if inside:  # a key inside a JSON value, e.g. the product of QC_THRESHOLDS
            msg = f"{', '.join(repr(x) for x in inside)}: {msg}"
        parts.append(f"{name}: {msg}")
    return "invalid settings: " + "; ".join(parts)


def load_settings(**overrides) -> Settings:
    """Read and validate settings; raise ``ConfigError`` with a readable message."""
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    if settings.models_dir == DEFAULT_MODELS_DIR:
        seed_models_dir(settings.models_dir)  # adds shipped versions the user folder lacks
    return settings
