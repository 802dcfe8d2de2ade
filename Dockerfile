# pressor CDS Hooks service. Multi-stage: wheels are built (durable-rules compiles C) in the first
# stage; the runtime stage has no compiler, runs as an unprivileged user and checks its own health.
#   docker build -t pressor .
#   docker run -p 8080:8080 -v $PWD/serve.yaml:/etc/pressor/serve.yaml:ro pressor
ARG PYTHON=python:3.13-slim-bookworm

FROM ${PYTHON} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md constraints.txt ./
# durable-rules' C engine, built from its source with the Python 3.13 patch (third_party/durable-rules/README.md)
COPY third_party third_party
COPY src src
COPY engine engine
COPY cli cli
COPY service service
COPY rules rules
COPY schemas schemas
# examples/ is a package of the wheel (pressor.examples: the web app's example patients)
COPY examples examples
# EXTRAS: optional dependency groups of pyproject (for example the PostgreSQL audit backend's), comma-separated.
# constraints.txt is the lock file: every wheel at the version the project tested.
ARG EXTRAS="postgresql"
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
 && printf '%s' "${EXTRAS}" > /wheels/EXTRAS

FROM ${PYTHON}
RUN groupadd --system --gid 10001 pressor \
 && useradd --system --uid 10001 --gid pressor --home-dir /var/lib/pressor --shell /usr/sbin/nologin pressor \
 && mkdir -p /var/lib/pressor /etc/pressor \
 && chown pressor:pressor /var/lib/pressor
COPY --from=build /wheels /wheels
# The same extras as the build stage (they are what the configuration needs: postgresql:// needs psycopg).
RUN EXTRAS="$(cat /wheels/EXTRAS)" \
 && pip install --no-cache-dir --no-index --find-links=/wheels "pressor${EXTRAS:+[$EXTRAS]}" \
 && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    PRESSOR_AUDIT_DB=/var/lib/pressor/audit.db
USER pressor:pressor
WORKDIR /var/lib/pressor
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["pressor", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--config", "/etc/pressor/serve.yaml", "--workers", "2"]
