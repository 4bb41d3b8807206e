# The code image: the petrosa_pipelines code location. docker-compose runs the webserver and the
# daemon from it too, and on Kubernetes it is the user deployment and every run's pod.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home
WORKDIR /opt/petrosa

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change,
# not on every code edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself (sensors/ and resources/ ship as packages of the same distribution).
COPY README.md ./
COPY petrosa_pipelines ./petrosa_pipelines
COPY sensors ./sensors
COPY resources ./resources
RUN pip install --no-deps . \
    && mkdir -p "$DAGSTER_HOME" /data/lake /data/landing /data/budget

# Instance config: PostgreSQL from DAGSTER_PG_* variables, queue limits, run monitoring.
COPY docker/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
COPY docker/workspace.yaml /opt/petrosa/docker/workspace.yaml

RUN useradd --system --uid 10001 --home-dir /opt/petrosa petrosa \
    && chown -R petrosa /data "$DAGSTER_HOME"
USER petrosa
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=10s --retries=12 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "petrosa_pipelines.definitions", "--location-name", "petrosa_pipelines"]
