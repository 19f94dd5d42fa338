# syntax=docker/dockerfile:1
# The Shipway image: one image for every role of the Helm chart (helm/shipway) —
# `shipway serve api|worker|gateway`, `shipway migrate`, `python -m shipway_operator` and
# the operator's fetch init container (`python -m shipway_operator.fetch`).
#
#   docker build -t registry.example.com/ml/shipway:0.1.0 .
#
# Two stages: the first builds a virtual environment with the `server`, `operator` and
# `openvino` extras (compilers and pip's cache stay there), the second copies only that
# environment onto a slim Python. It runs as uid/gid 10001 (the chart's runAsUser), owns no file it
# runs, and writes only to SHIPWAY_HOME and /tmp (emptyDirs in the chart: the root file
# system is read-only). No Triton inside: Triton runs in its own image, per
# ModelDeployment.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/shipway
WORKDIR /src
# dependencies first (a layer reused while only the code changes)
COPY pyproject.toml README.md ./
COPY platform ./platform
COPY operators ./operators
RUN /opt/shipway/bin/pip install --no-compile ".[server,operator,openvino]" \
 && /opt/shipway/bin/python -m compileall -q /opt/shipway/lib

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="shipway" \
      org.opencontainers.image.description="Shipway: API, build worker, gateway, operator" \
      org.opencontainers.image.source="https://github.com/shipway/shipway"
# git: the workers fetch pushed commits for GitOps (https URLs; the chart mounts no SSH key)
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 shipway \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/shipway shipway \
 && install -d -o 10001 -g 10001 /var/lib/shipway
COPY --from=build /opt/shipway /opt/shipway
ENV PATH=/opt/shipway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHIPWAY_HOME=/var/lib/shipway
USER 10001:10001
WORKDIR /var/lib/shipway
EXPOSE 8700 8800
ENTRYPOINT ["shipway"]
CMD ["--help"]
