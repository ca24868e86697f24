# syntax=docker/dockerfile:1.7
# GPU worker image: `qc-stream worker` (and retrain / bench) on a CUDA PyTorch base.
#
# The base tag carries the same torch release that pyproject.toml pins (torch==2.14.1), so the
# `pip install` below finds torch already satisfied and keeps the base's CUDA build. If your
# registry mirror lacks this tag, pass another with --build-arg BASE_IMAGE=...; pip then installs
# the pinned torch wheel on top (bigger image, same behaviour). Pin by digest in production
# (`BASE_IMAGE=pytorch/pytorch@sha256:...`); see deploy/README.md.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime

# --- build stage: a wheel of qc-stream only (no dependencies) -------------------------------------
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY qc_stream ./qc_stream
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime stage ----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
# pyproject.toml requires Python 3.11; fail the build with a readable line instead of a resolver error.
RUN python -c "import sys; v = sys.version_info[:2]; assert v == (3, 11), f'base image has Python {v}, qc-stream needs 3.11: pick a BASE_IMAGE with Python 3.11'"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    QC_MODELS_DIR=/app/models \
    QC_HEALTH_PORT=8000 \
    QC_DEVICE=cuda \
    QC_PRECISION=fp16 \
    QC_BROKER_PROFILE=production

# Dependencies come from the pins in pyproject.toml (carried inside the wheel's metadata).
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels

RUN groupadd --system --gid 10001 qc \
    && useradd --system --uid 10001 --gid qc --home-dir /app --shell /usr/sbin/nologin qc
WORKDIR /app
# The source tree under /app too, first on PYTHONPATH: code that finds files relative to the
# repository root (migrations/, alembic.ini, models/) works the same as in a checkout.
COPY --chown=qc:qc qc_stream ./qc_stream
COPY --chown=qc:qc migrations ./migrations
COPY --chown=qc:qc alembic.ini ./
# Shipped backbone weights and prompt versions; a volume mounted here (compose) or seeded from here
# (Kubernetes) lets retrain publish new versions that every worker sees.
COPY --chown=qc:qc models ./models

USER 10001:10001
EXPOSE 8000
# /healthz (worker, registry listener): 503 once the heartbeat is older than QC_HEALTH_STALE_S;
# readiness (/readyz) is left to the orchestrator.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "qc_stream.observability.probe", "/healthz"]
ENTRYPOINT ["qc-stream"]
CMD ["worker"]
