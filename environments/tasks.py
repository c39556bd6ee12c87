"""Celery tasks: thin wrappers that load what they need and call domain functions."""

from __future__ import annotations

from celery import shared_task
from django.core.cache import cache
from django.utils import timezone

HEARTBEAT_KEY = "envportal:heartbeat"


@shared_task(ignore_result=False)
def heartbeat() -> str:
    """Record that a worker ran a beat-scheduled task; return the time as ISO 8601."""
    now = timezone.now().isoformat()
    cache.set(HEARTBEAT_KEY, now, timeout=None)
    return now
