# The INSID3 image: the HTTP API (`serve`, the default command) and the Redis workers (`worker`).
#   docker build -t insid3-serve:cuda .                          CUDA (default)
#   docker build --build-arg VARIANT=cpu -t insid3-serve:cpu .   CPU only
# Both variants are a slim Python 3.11 base plus one torch: the CUDA variant gets PyPI's torch wheel,
# which brings its CUDA runtime libraries as nvidia-* wheels (the host needs only the NVIDIA driver);
# the CPU variant gets the CPU-only wheel of PyTorch's CPU index.
#
# Offline or behind a proxy (docs/deployment.md, "Air-gapped and proxied builds"): no `# syntax=` line,
# so nothing is pulled for the Dockerfile frontend (BuildKit of Docker >= 20.10 builds it as is);
# BASE_IMAGE, TORCH_INDEX_URL and pip's PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_TRUSTED_HOST are
# build args; a CA bundle and a pip.conf (credentials stay out of the image and its history) are
# optional BuildKit secrets:
#   docker build --secret id=ca.crt,src=/etc/ssl/certs/ca-certificates.crt --secret id=pip.conf,src=pip.conf .
# No weights inside: mount the official .pth files read-only at /app/pretrain (see docs/deployment.md).

ARG VARIANT=cuda
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: the project's pure-Python wheel (the source tree stays out of the final image)
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY core core
COPY workers workers
COPY evaluation evaluation
COPY insid3 insid3
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt,target=/run/secrets/ca.crt \
    if [ -s /run/secrets/ca.crt ]; then export PIP_CERT=/run/secrets/ca.crt; fi \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- the image
FROM ${BASE_IMAGE}
ARG VARIANT
# Where torch comes from: empty = PyPI's CUDA wheels (or your PIP_INDEX_URL) for cuda,
# PyTorch's CPU index for cpu. Another CUDA build: https://download.pytorch.org/whl/cu128, ...
ARG TORCH_INDEX_URL=
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST
RUN python -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, got {sys.version}"'

# torch first (the big layer, cached across code changes), then the project and its other dependencies.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt,target=/run/secrets/ca.crt \
    if [ -s /run/secrets/ca.crt ]; then export PIP_CERT=/run/secrets/ca.crt; fi \
 && case "${VARIANT}" in \
      cuda) index="${TORCH_INDEX_URL}" ;; \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      *) echo "VARIANT must be cuda or cpu, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && if [ -n "${index}" ]; then export PIP_INDEX_URL="${index}"; fi \
 && pip install --no-cache-dir --root-user-action=ignore torch==2.14.1 torchvision==0.29.1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt,target=/run/secrets/ca.crt \
    if [ -s /run/secrets/ca.crt ]; then export PIP_CERT=/run/secrets/ca.crt; fi \
 && pip install --no-cache-dir --root-user-action=ignore /wheels/*.whl

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
