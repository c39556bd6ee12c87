# syntax=docker/dockerfile:1
# One image for every role: web (default), worker, beat and migrate, chosen by the command.
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.lock .
RUN python -m venv /venv && /venv/bin/pip install -r requirements.lock

FROM python:3.12-slim-bookworm
ENV PATH=/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=envportal.settings STATIC_ROOT=/app/staticfiles
RUN groupadd --system --gid 10001 envportal \
 && useradd --system --uid 10001 --gid envportal --home-dir /app --shell /usr/sbin/nologin envportal
WORKDIR /app
COPY --from=build /venv /venv
COPY manage.py ./
COPY envportal ./envportal
COPY environments ./environments
COPY templates ./templates
COPY static ./static
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# collectstatic needs settings but no secrets: a throwaway DEBUG configuration for the build.
RUN DEBUG=true ENVPORTAL_SANDBOX=false python manage.py collectstatic --no-input -v 0
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["web"]
