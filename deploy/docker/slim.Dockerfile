# syntax=docker/dockerfile:1.7
# Slim image for the camera producers and the CLI (`db upgrade`, `defects`, `models`, `dashboards`).
# No CUDA: torch comes from the CPU wheel index at the release pyproject.toml pins, which keeps this
# image around 1 GB instead of several.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# --- build stage: wheels for qc-stream and every dependency -----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ARG TORCH_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY pyproject.toml README.md ./
COPY qc_stream ./qc_stream
RUN pip install --no-cache-dir .

# --- runtime stage: the venv only, no build tools ----------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    QC_MODELS_DIR=/app/models \
    QC_HEALTH_PORT=8000 \
    QC_DEVICE=cpu \
    QC_BROKER_PROFILE=production
RUN groupadd --system --gid 10001 qc \
    && useradd --system --uid 10001 --gid qc --home-dir /app --shell /usr/sbin/nologin qc
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The source tree under /app too, first on PYTHONPATH: code that finds files relative to the
# repository root (migrations/, alembic.ini, models/) works the same as in a checkout.
COPY --chown=qc:qc qc_stream ./qc_stream
COPY --chown=qc:qc migrations ./migrations
COPY --chown=qc:qc alembic.ini ./
COPY --chown=qc:qc models ./models
USER 10001:10001
EXPOSE 8000
# No image-wide health check: the CLI jobs exit, and the camera serves /healthz only when asked
# (`qc-stream camera --health-port N`); compose and Kubernetes probe it there (deploy/README.md).
HEALTHCHECK NONE
ENTRYPOINT ["qc-stream"]
CMD ["--help"]
