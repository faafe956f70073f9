# pykubeproxy's node image: the daemon plus the kernel tools it drives.
#
#   docker build -t pykubeproxy:0.1.0 .
#
# Both stages start from the same Python image, so the virtual environment built in the first
# (whose interpreter links to /usr/local/bin/python3.11) runs unchanged in the second.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lockfile changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY pykubeproxy ./pykubeproxy
# --no-editable: the package itself is copied into the venv, which must not point back at /src.
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
# iptables ships both iptables-legacy and iptables-nft; pykubeproxy picks the one the node uses.
# ipset, ipvsadm and kmod (modprobe) are for ipvs mode; conntrack clears stale UDP entries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        conntrack \
        ipset \
        iptables \
        ipvsadm \
        kmod \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["pykubeproxy"]
