#!/bin/sh
# The role of this container: web | worker | beat | migrate | any other command.
set -e
case "${1:-web}" in
  web)     shift; exec gunicorn envportal.wsgi:application --bind 0.0.0.0:8000 \
             --workers "${WEB_WORKERS:-3}" --access-logfile - --forwarded-allow-ips '*' "$@" ;;
  worker)  shift; exec celery -A envportal worker -l "${LOG_LEVEL:-INFO}" "$@" ;;
  beat)    shift; exec celery -A envportal beat -l "${LOG_LEVEL:-INFO}" "$@" ;;
  migrate) shift; exec python manage.py migrate --no-input "$@" ;;
  *)       exec "$@" ;;
esac
