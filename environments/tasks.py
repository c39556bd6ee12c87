"""Celery tasks: thin wrappers that take ids, skip overlapping runs, and call domain functions."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from environments import cleanup, feedback, lifecycle, secret_sync, sync
from environments.errors import Transient
from environments.models import Repository

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "envportal:heartbeat"
LOCK_SECONDS = 300  # longer than the hard time limit: a killed run's lock expires by itself


@contextmanager
def single_run(name: str) -> Iterator[bool]:
    """Yield True when this run holds the lock `name`; False when another run does."""
    key, token = f"envportal:lock:{name}", uuid.uuid4().hex
    acquired = cache.add(key, token, timeout=LOCK_SECONDS)
    try:
        yield bool(acquired)
    finally:
        if acquired and cache.get(key) == token:
            cache.delete(key)


AGAIN_PASSES = 3  # at most this many extra passes for runs asked for meanwhile


def _locked(name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `work` unless another run of `name` is going; then that one runs it again once it
    is done (a webhook's sync skipped mid-run is not lost until the next beat)."""
    again = f"envportal:again:{name}"
    cache.set(again, 1, timeout=LOCK_SECONDS)  # asked for: by this run, or for the running one
    result: dict[str, Any] = {"skipped": True}
    for _ in range(1 + AGAIN_PASSES):
        with single_run(name) as mine:
            if not mine:
                log.info("%s: the running one will run again after it is done", name)
                return result
            cache.delete(again)
            result = work()
        if not cache.get(again):  # nobody asked meanwhile (checked after the lock is free)
            return result
    return result


def enqueue(task: Any, *args: Any) -> None:
    """Queue `task` once the transaction commits. With the broker down, say so and go on: the
    intent is in the database already (an Action row, a repository's pending refresh), and
    beat's resume_actions and cluster sync carry it out once the broker is back."""

    def publish() -> None:
        try:
            task.delay(*args)
        except (OperationalError, OSError) as exc:
            log.warning(
                "could not queue %s (%s: the broker is unreachable); its intent is stored and "
                "runs at a later beat",
                task.name,
                type(exc).__name__,
            )

    transaction.on_commit(publish)


@shared_task(base=DjangoTask, ignore_result=False)
def heartbeat() -> str:
    """Record that a worker ran a beat-scheduled task; return the time as ISO 8601."""
    now = timezone.now().isoformat()
    cache.set(HEARTBEAT_KEY, now, timeout=None)
    return now


@shared_task(base=DjangoTask, soft_time_limit=120, time_limit=150)
def sync_pull_requests() -> dict[str, Any]:
    """Beat: open PRs of every repository (conditional requests; 304s are free)."""
    result = _locked("sync_pull_requests", sync.sync_pull_requests)
    if result.get("changed"):
        sync_clusters.delay()  # new or changed PRs get their environments assessed now
    return result


@shared_task(base=DjangoTask, soft_time_limit=120, time_limit=150)
def sync_clusters() -> dict[str, Any]:
    """Beat (and after each webhook): the cluster's state of every environment."""
    result = _locked("sync_clusters", sync.sync_cluster)
    if result.get("discovered"):
        sync_pull_requests.delay()  # a new repository: read its PRs now, not at the next tick
    if result.get("needs_cluster_secrets"):
        sync_cluster_secrets.delay()  # a vcluster is ready: give Argo CD its cluster secret now
    if cleanup.candidates().exists():
        clean_leftovers.delay()  # an environment is gone: remove what Argo CD left behind
    if result.get("changed"):
        publish_feedback.delay()  # tell the PRs now, not at the next tick
    return result


@shared_task(
    base=DjangoTask,
    autoretry_for=(Transient,),  # Kubernetes down or throttling; RBAC errors wait for a fix
    retry_backoff=2,
    retry_backoff_max=30,
    max_retries=3,
    soft_time_limit=120,
    time_limit=150,
)
def sync_cluster_secrets() -> dict[str, Any]:
    """Beat (and when a vcluster becomes ready): vcluster kubeconfigs → Argo CD cluster secrets."""
    result = _locked("sync_cluster_secrets", secret_sync.sync_cluster_secrets)
    if any(result.get(k) for k in ("created", "updated", "deleted")):
        sync_clusters.apply_async(countdown=2)  # show the apps syncing against their new cluster
    return result


@shared_task(
    base=DjangoTask,
    autoretry_for=(Transient,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
    soft_time_limit=60,
    time_limit=90,
)
def refresh_applicationsets(repository_id: int) -> list[str]:
    """After a webhook: make Argo CD list the repository's PRs now instead of at its next poll."""
    repository = Repository.objects.filter(pk=repository_id, enabled=True).first()
    if repository is None:
        return []
    return sync.refresh_applicationsets(repository)


@shared_task(
    base=DjangoTask,
    autoretry_for=(Transient,),  # GitHub or Kubernetes down: the intent waits in the database
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=8,
    soft_time_limit=60,
    time_limit=90,
)
def run_action(action_id: int) -> str:
    """Carry out a user's destroy, recreate or redeploy (the row holds the intent)."""
    result = lifecycle.execute(action_id)
    sync_clusters.apply_async(countdown=2)  # show its effect without waiting for the beat
    return result


@shared_task(base=DjangoTask, soft_time_limit=60, time_limit=90)
def resume_actions() -> int:
    """Beat: re-queue actions no worker finished (killed mid-task, retries exhausted)."""
    ids = lifecycle.unfinished()
    for action_id in ids:
        run_action.delay(action_id)
    return len(ids)


@shared_task(base=DjangoTask, soft_time_limit=60, time_limit=90)
def expire_environments() -> dict[str, int]:
    """Beat: expiry warnings, and expiry of leases that ended (through the destroy path)."""
    return _locked("expire_environments", lifecycle.expire_due)


@shared_task(
    base=DjangoTask,
    autoretry_for=(Transient,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
    soft_time_limit=120,
    time_limit=150,
)
def clean_leftovers() -> dict[str, Any]:
    """After a cluster sync saw an environment gone: delete the namespace it leaves behind."""
    return _locked("clean_leftovers", cleanup.clean_leftovers)


@shared_task(base=DjangoTask, soft_time_limit=120, time_limit=150)
def sweep_orphans() -> dict[str, Any]:
    """Beat: the admin's report of what belongs to no open PR (nothing is deleted here)."""
    return _locked("sweep_orphans", lambda: {"orphans": len(cleanup.sweep())})


@shared_task(
    base=DjangoTask,
    autoretry_for=(Transient,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
    soft_time_limit=120,
    time_limit=150,
)
def publish_feedback() -> dict[str, Any]:
    """After a cluster sync changed something (and on beat): PR comments and deployments."""
    return _locked("publish_feedback", feedback.publish)
