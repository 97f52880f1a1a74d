# syntax=docker/dockerfile:1
# ContextOS: one image for every process. The command picks the role:
#   scripts/start-web (default), scripts/start-worker, scripts/start-beat, scripts/start-flower.

# --- Builder: the pinned runtime requirements in a self-contained venv -------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements/ /tmp/requirements/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/prod.txt

# --- Runtime ------------------------------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="ContextOS" \
      org.opencontainers.image.description="A self-hosted gateway for AI work and background jobs."

ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings.prod

# A fixed uid/gid so volume ownership is predictable across rebuilds.
RUN groupadd --gid 10001 contextos \
    && useradd --uid 10001 --gid contextos --create-home --home-dir /home/contextos \
       --shell /usr/sbin/nologin contextos

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY . .

# The code stays root-owned (read-only to the app). Only STATIC_ROOT (start-web
# re-runs collectstatic, a no-op when nothing changed) and DATA_DIR are the
# user's. The SECRET_KEY/ALLOWED_HOSTS here are throwaway values that exist only
# for this RUN line: prod settings refuse to load without them.
RUN mkdir -p /app/staticfiles /app/var \
    && SECRET_KEY=collectstatic-at-build-time-only-never-used-to-sign-anything \
       ALLOWED_HOSTS=localhost \
       DATA_DIR=/tmp/build-data python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/build-data \
    && chown -R contextos:contextos /app/staticfiles /app/var

# Numeric, so runtimes (e.g. Kubernetes runAsNonRoot) can verify it is not root.
USER 10001:10001

EXPOSE 8000

# Liveness of the web process on PORT (default 8000), sent with a Host header
# that ALLOWED_HOSTS accepts, whatever names it lists.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["scripts/healthcheck-web"]

CMD ["scripts/start-web"]
