# syntax=docker/dockerfile:1.7
# The INSID3 image: the HTTP API (`serve`, the default command) and the Redis workers (`worker`).
#   docker build -t insid3-serve:cuda .                          CUDA (default)
#   docker build --build-arg VARIANT=cpu -t insid3-serve:cpu .   CPU only
# No weights inside: mount the official .pth files read-only at /app/pretrain (see docs/deployment.md).

ARG VARIANT=cuda
ARG CUDA_BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
ARG CPU_BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: the project's pure-Python wheel (the source tree stays out of the final image)
FROM ${CPU_BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY core core
COPY workers workers
COPY evaluation evaluation
COPY insid3 insid3
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime bases: Python 3.11 with the CUDA runtime, or plain Python 3.11
FROM ${CUDA_BASE_IMAGE} AS runtime-cuda
FROM ${CPU_BASE_IMAGE} AS runtime-cpu

# ---- the image (runtime-${VARIANT} is a stage above, not an image to pin)
# hadolint ignore=DL3006
FROM runtime-${VARIANT}
ARG VARIANT
RUN python -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, got {sys.version}"'

# torch first (the big layer, cached across code changes): CUDA wheels from PyPI, or the CPU index.
RUN case "${VARIANT}" in \
      cuda) index=https://pypi.org/simple ;; \
      cpu) index=https://download.pytorch.org/whl/cpu ;; \
      *) echo "VARIANT must be cuda or cpu, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && pip install --no-cache-dir --root-user-action=ignore --index-url "${index}" torch==2.14.1 torchvision==0.29.1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --root-user-action=ignore /wheels/*.whl

RUN useradd --create-home --uid 10001 --user-group insid3 \
 && mkdir -p /app/pretrain /var/cache/insid3/basis \
 && chown -R insid3:insid3 /var/cache/insid3
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/insid3-entrypoint
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/insid3-healthcheck

ENV PYTHONUNBUFFERED=1 \
    INSID3_HOST=0.0.0.0 \
    INSID3_PRETRAIN_DIR=/app/pretrain \
    INSID3_BASIS_CACHE_DIR=/var/cache/insid3/basis
WORKDIR /app
# The positional-basis cache: computed once per (weights, image size), kept across restarts.
VOLUME ["/var/cache/insid3"]
USER 10001:10001
EXPOSE 8000 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["insid3-healthcheck"]
ENTRYPOINT ["insid3-entrypoint"]
CMD ["serve"]
