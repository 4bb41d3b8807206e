# The code image: the petrosa_pipelines code location, also used by webserver and daemon.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DAGSTER_HOME=/opt/dagster/home
WORKDIR /opt/petrosa
COPY pyproject.toml README.md ./
COPY petrosa_pipelines ./petrosa_pipelines
COPY sensors ./sensors
COPY resources ./resources
RUN pip install --no-cache-dir . && mkdir -p "$DAGSTER_HOME" /data/lake /data/landing
COPY dagster.yaml workspace.yaml ./
COPY docker/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
RUN useradd --system --uid 10001 petrosa && chown -R petrosa /data "$DAGSTER_HOME"
USER petrosa
EXPOSE 4000
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "petrosa_pipelines.definitions"]
