"""Celery tasks are thin, skip overlapping runs, and retry only what is transient."""

from __future__ import annotations

import pytest

from environments import sync, tasks
from environments.errors import PermissionDenied, Transient
from environments.models import Repository

pytestmark = pytest.mark.django_db


def test_an_overlapping_run_is_skipped(monkeypatch):
    calls = []

    def work():
        calls.append(1)
        return {"ok": True}

    monkeypatch.setattr(sync, "sync_cluster", work)
    with tasks.single_run("sync_clusters") as mine:
        assert mine
        assert tasks.sync_clusters.apply().get() == {"skipped": True}
    assert calls == []
    assert tasks.sync_clusters.apply().get() == {"ok": True}
    assert calls == [1]  # the skipped one's request was served by this run, not run twice


def test_a_run_asked_for_while_one_is_going_makes_that_one_run_again():
    calls = []

    def work():
        calls.append(1)
        if len(calls) == 1:  # a webhook's sync arrives in the middle of this run
            assert tasks._locked("sync_clusters", work) == {"skipped": True}
        return {"pass": len(calls)}

    assert tasks._locked("sync_clusters", work) == {"pass": 2}
    assert tasks._locked("sync_clusters", work) == {"pass": 3}  # and nothing left over


def test_refresh_ignores_a_repository_that_is_gone_or_disabled(monkeypatch):
    monkeypatch.setattr(sync, "refresh_applicationsets", lambda repo: pytest.fail("called"))
    assert tasks.refresh_applicationsets.apply(args=[12345]).get() == []
    repo = Repository.objects.create(owner="a", name="b", enabled=False, applicationsets=["x"])
    assert tasks.refresh_applicationsets.apply(args=[repo.pk]).get() == []


def test_refresh_retries_transient_errors_only(monkeypatch):
    repo = Repository.objects.create(owner="a", name="b", applicationsets=["x"])
    attempts = []

    def flaky(repository):
        attempts.append(1)
        raise Transient("kubernetes unreachable")

    monkeypatch.setattr(sync, "refresh_applicationsets", flaky)
    result = tasks.refresh_applicationsets.apply(args=[repo.pk])
    assert isinstance(result.result, Transient)
    assert len(attempts) == 6  # the first try and five retries (eager retries run at once)

    attempts.clear()

    def forbidden(repository):
        attempts.append(1)
        raise PermissionDenied("rbac")

    monkeypatch.setattr(sync, "refresh_applicationsets", forbidden)
    result = tasks.refresh_applicationsets.apply(args=[repo.pk])
    assert isinstance(result.result, PermissionDenied)
    assert len(attempts) == 1


def test_the_secret_sync_retries_when_kubernetes_is_down_but_not_on_rbac(monkeypatch):
    from environments import kube_gateway

    attempts = []

    def down():
        attempts.append(1)
        raise Transient("connection refused")

    monkeypatch.setattr(kube_gateway, "list_vcluster_statefulsets", down)
    result = tasks.sync_cluster_secrets.apply()
    assert isinstance(result.result, Transient)
    assert len(attempts) == 4  # the first try and three retries

    attempts.clear()

    def forbidden():
        attempts.append(1)
        raise PermissionDenied("statefulsets is forbidden")

    monkeypatch.setattr(kube_gateway, "list_vcluster_statefulsets", forbidden)
    assert tasks.sync_cluster_secrets.apply().get() == {"error": 1, "requests": 0}
    assert len(attempts) == 1


def test_a_vcluster_waiting_for_its_secret_triggers_the_secret_sync(monkeypatch):
    queued = []
    monkeypatch.setattr(sync, "sync_cluster", lambda: {"needs_cluster_secrets": 1})
    monkeypatch.setattr(tasks.sync_cluster_secrets, "delay", lambda: queued.append(1))
    tasks.sync_clusters.apply().get()
    assert queued == [1]
