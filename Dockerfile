# ometer-exporter container image.
#
#   docker build -t ometer-exporter .
#   docker run -d -p 9877:9877 -e OLLAMA_HOST=http://host.docker.internal:11434 ometer-exporter
#   docker run -d -p 9877:9877 -v ./config.yaml:/etc/ometer/config.yaml:ro \
#       -v ometer-data:/var/lib/ometer ometer-exporter --config.file=/etc/ometer/config.yaml
#
# Configuration comes from a mounted file (--config.file, or OMETER_CONFIG_FILE) and the
# environment; nothing secret is baked in (an API key is named in the config with api_key_env or
# api_key_file and given at run time). Results live in the volume /var/lib/ometer.
#
# tests/test_deploy.py repeats this file's install path (wheel, then a fresh venv) without Docker
# and lints it with hadolint: change the two together.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project as a wheel, installed with its dependencies into a venv -----------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ometer_exporter/ ometer_exporter/
# pip runs against the venv from outside (--python), so the venv itself carries no pip.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/ometer \
    && pip --python /opt/ometer/bin/python install --no-cache-dir /wheels/ometer_exporter-*.whl

# --- runtime: the venv on a slim Python, as an unprivileged user --------------------------------
FROM ${PYTHON_IMAGE}
ARG OMETER_UID=10001
RUN groupadd --system --gid "${OMETER_UID}" ometer \
    && useradd --system --uid "${OMETER_UID}" --gid ometer --no-create-home \
        --home-dir /var/lib/ometer --shell /usr/sbin/nologin ometer \
    && mkdir -p /var/lib/ometer /etc/ometer \
    && chown ometer:ometer /var/lib/ometer
COPY --from=build /opt/ometer /opt/ometer

# OMETER_STORAGE_PATH beats storage.path of a config file: in the image, results always go to the
# volume. OMETER_CONFIG_FILE stays unset: without a file the exporter benchmarks the models
# loaded at OLLAMA_HOST (default http://localhost:11434, which in a container is the container).
ENV PATH=/opt/ometer/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMETER_STORAGE_PATH=/var/lib/ometer
VOLUME ["/var/lib/ometer"]
WORKDIR /var/lib/ometer
USER ${OMETER_UID}:${OMETER_UID}
EXPOSE 9877

# A slim image has no curl, so the check is Python. Its port follows OMETER_LISTEN_ADDRESS
# (default :9877). A 401 counts as healthy: with basic auth on (--web.config.file) the process
# still answers. With TLS or --web.listen-address on another port, override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.error, urllib.request\nport = (os.environ.get('OMETER_LISTEN_ADDRESS') or ':9877').rpartition(':')[2]\ntry:\n    urllib.request.urlopen('http://127.0.0.1:' + port + '/-/healthy', timeout=4)\nexcept urllib.error.HTTPError as error:\n    sys.exit(error.code != 401)"]

ENTRYPOINT ["ometer-exporter"]
