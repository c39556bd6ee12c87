"""The Celery app: workers sync secrets and refresh ApplicationSets; beat schedules the work."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "envportal.settings")

app = Celery("envportal")
# All CELERY_* settings from envportal/settings.py (JSON only, acks_late, time limits, DB beat).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
