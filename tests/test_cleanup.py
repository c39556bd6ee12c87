"""What Argo CD leaves behind after an environment goes, and the orphan sweep, on the sandbox."""

from __future__ import annotations

import pytest

from environments import cleanup, sync
from environments.models import Environment, Event, Orphan, Repository
from sandbox.controllers import APPLICATIONS, NAMESPACES, SECRETS

pytestmark = pytest.mark.django_db
SEED = ("a1tan", "app-ephemeraltest")
NS = "sampleapp-ns-payments-1-namespace"
VC_NS = "cluster-payments-1-namespace"


def namespaces(world) -> set[str]:
    return {n["metadata"]["name"] for n in world.cluster.list_objects(NAMESPACES, "")}


def close_and_settle(world, number: int) -> None:
    world.github.close(*SEED, number)
    sync.sync_pull_requests()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.6)
    sync.sync_cluster()


@pytest.fixture
def up(world):
    world.github.open_pr(*SEED, "payments", "Payments", "amara")
    world.cluster.create(NAMESPACES, "", {"metadata": {"name": "team-tools"}})
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    assert {NS, VC_NS} <= namespaces(world)
    return world


def test_a_closed_prs_namespaces_are_deleted_once_its_apps_are_gone(up):
    world = up
    close_and_settle(world, 1)
    assert Environment.objects.get(flavor="namespace").state == "destroyed"
    assert cleanup.clean_leftovers() == {"deleted": 2, "kept": 0}
    world.settle(0.3)
    assert not {NS, VC_NS} & namespaces(world)
    assert "team-tools" in namespaces(world) and "argocd" in namespaces(world)
    assert Event.objects.filter(kind="cleaned-up").count() == 2
    assert list(cleanup.candidates()) == []
    assert cleanup.clean_leftovers() == {"deleted": 0, "kept": 0}  # twice is harmless


def test_a_namespace_an_application_still_targets_is_kept(up):
    world = up
    close_and_settle(world, 1)
    world.cluster.create(APPLICATIONS, "argocd", {
        "metadata": {"name": "someone-elses"},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://example.com/x.git", "path": "x"},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": NS}},
    })  # fmt: skip
    assert cleanup.clean_leftovers()["kept"] == 1
    assert NS in namespaces(world)


def test_the_sweep_reports_orphans_and_cleans_them_up(up):
    world = up
    close_and_settle(world, 1)
    # vcluster's own kubeconfig Secret went with its StatefulSet (ownerReference); a copy
    # someone left there did not
    world.cluster.create(SECRETS, VC_NS, {"metadata": {"name": "vc-cluster-payments-1"},
                                          "type": "Opaque", "stringData": {"config": "x"}})  # fmt: skip
    found = {(o.kind, o.namespace, o.name) for o in cleanup.sweep()}
    assert ("namespace", "", NS) in found and ("namespace", "", VC_NS) in found
    assert ("vcluster-secret", VC_NS, "vc-cluster-payments-1") in found
    assert not any(o.name == "team-tools" for o in Orphan.objects.all())
    for orphan in Orphan.objects.filter(kind="namespace"):
        cleanup.remove(orphan)
    world.settle(0.3)
    assert not {NS, VC_NS} & namespaces(world)
    assert {o.kind for o in cleanup.sweep()} <= {"cluster-secret"}


def test_a_namespace_older_than_the_environment_is_never_deleted(up):
    from datetime import timedelta

    from django.utils import timezone

    world = up
    close_and_settle(world, 1)
    # as if `sampleapp-ns-...` had been there (someone else's) long before the PR appeared
    Environment.objects.filter(flavor="namespace").update(
        created_at=timezone.now() + timedelta(hours=1)
    )
    assert cleanup.clean_leftovers()["deleted"] == 1  # only the vcluster's namespace
    world.settle(0.3)
    assert NS in namespaces(world) and VC_NS not in namespaces(world)
    assert any(o.name == NS for o in cleanup.sweep())  # shown to a person instead
