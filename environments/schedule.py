"""The periodic work Celery beat runs, stored in the database (django-celery-beat).

Rows are created after `migrate` when missing and then belong to the admins: an interval
changed or a task disabled in the admin is never overwritten here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Periodic:
    name: str
    task: str
    every_seconds: int
    description: str


PERIODIC_TASKS = [
    Periodic(
        name="envportal: sync pull requests",
        task="environments.tasks.sync_pull_requests",
        every_seconds=60,
        description="Open PRs of every repository from GitHub (webhooks make it near-instant).",
    ),
    Periodic(
        name="envportal: sync clusters",
        task="environments.tasks.sync_clusters",
        every_seconds=15,
        description="Argo CD Applications, namespaces, vclusters and secrets of every environment.",
    ),
    Periodic(
        name="envportal: sync cluster secrets",
        task="environments.tasks.sync_cluster_secrets",
        every_seconds=15,
        description="vcluster kubeconfigs → Argo CD cluster secrets (create, update, delete).",
    ),
    Periodic(
        name="envportal: resume actions",
        task="environments.tasks.resume_actions",
        every_seconds=120,
        description="Re-queues destroy/recreate/redeploy requests no worker finished.",
    ),
    Periodic(
        name="envportal: expire environments",
        task="environments.tasks.expire_environments",
        every_seconds=60,
        description="Warns 24 h and 1 h before a lease ends; expires what is due.",
    ),
    Periodic(
        name="envportal: orphan sweep",
        task="environments.tasks.sweep_orphans",
        every_seconds=600,
        description="Lists namespaces and secrets no open PR owns (admin → Orphans).",
    ),
    Periodic(
        name="envportal: GitHub feedback",
        task="environments.tasks.publish_feedback",
        every_seconds=120,
        description="Sticky PR comment and GitHub Deployments, written only when they change.",
    ),
    Periodic(
        name="envportal: heartbeat",
        task="environments.tasks.heartbeat",
        every_seconds=30,
        description="Proves beat and a worker are alive; the portal shows when it last ran.",
    ),
]


def ensure_periodic_tasks() -> list[str]:
    """Create the missing periodic tasks; return the names created."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = []
    for periodic in PERIODIC_TASKS:
        if PeriodicTask.objects.filter(name=periodic.name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=periodic.every_seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=periodic.name,
            task=periodic.task,
            interval=interval,
            description=periodic.description,
            # A tick that could not run within one interval is obsolete: the next one follows.
            expire_seconds=periodic.every_seconds,
        )
        created.append(periodic.name)
    return created


def ensure_periodic_tasks_after_migrate(**kwargs: Any) -> None:
    from django.db import router
    from django_celery_beat.models import PeriodicTask

    using = kwargs.get("using", "default")
    if router.allow_migrate_model(using, PeriodicTask):
        ensure_periodic_tasks()
