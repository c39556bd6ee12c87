"""Secret synchronization on the sandbox: vcluster kubeconfig → Argo CD cluster secret."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import yaml

from environments import kube_gateway, secret_sync, sync
from environments.models import ClusterSecret, Environment, Repository
from sandbox.controllers import APPLICATIONS, SECRETS
from sandbox.world import World

pytestmark = pytest.mark.django_db
SEED = ("a1tan", "app-ephemeraltest")
MANAGED = "app.kubernetes.io/managed-by=envportal"


def server_of(branch: str, number: int) -> str:
    name = f"cluster-{branch}-{number}"
    return f"https://{name}.{name}-namespace.svc.cluster.local"


def up(world: World, *branches: str) -> list[dict]:
    """Open PRs and let Argo CD and the vclusters come up (cluster secrets still missing)."""
    prs = [world.github.open_pr(*SEED, b, b.title(), "maria") for b in branches]
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.2)
    sync.sync_cluster()
    return prs


def managed_secrets(world: World) -> list[dict]:
    return world.cluster.list_objects(SECRETS, "argocd", MANAGED)


def vcluster_env(number: int) -> Environment:
    return Environment.objects.get(pull_request__number=number, flavor="vcluster")


def app_status(world: World, name: str) -> dict:
    return world.cluster.get(APPLICATIONS, "argocd", name)["status"]


def test_the_vcluster_app_is_stuck_until_the_sync_then_healthy_with_no_other_action(world):
    (_pr,) = up(world, "login-page")
    name = "sampleapp-login-page-1"
    world.settle(0.5)
    assert (
        "there are no clusters with this URL" in app_status(world, name)["conditions"][0]["message"]
    )
    assert "waiting for the Argo CD cluster secret" in vcluster_env(1).reason

    outcome = secret_sync.sync_cluster_secrets()
    assert outcome["created"] == 1
    (secret,) = managed_secrets(world)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["server"] == server_of("login-page", 1)
    assert data["name"] == "pr-1-a1tan-app-ephemeraltest"
    config = json.loads(data["config"])
    assert config["tlsClientConfig"]["insecure"] is False
    source = world.cluster.get(SECRETS, "cluster-login-page-1-namespace", "vc-cluster-login-page-1")
    assert config["tlsClientConfig"]["caData"] == source["data"]["certificate-authority"]
    assert config["tlsClientConfig"]["keyData"] == source["data"]["client-key"]
    assert secret["metadata"]["labels"]["argocd.argoproj.io/secret-type"] == "cluster"
    assert (
        secret["metadata"]["annotations"]["envportal.io/source"]
        == "cluster-login-page-1-namespace/vc-cluster-login-page-1"
    )
    assert secret["metadata"]["annotations"]["envportal.io/repository"] == "a1tan/app-ephemeraltest"

    world.settle(1.0)
    assert app_status(world, name)["health"]["status"] == "Healthy"
    sync.sync_cluster()
    env = vcluster_env(1)
    assert env.state == "ready", env.reason
    record = env.cluster_secret
    assert (record.state, record.server) == ("synced", server_of("login-page", 1))
    assert len(record.fingerprint) == 12
    assert secret_sync.sync_cluster_secrets()["created"] == 0  # idempotent


def test_a_rotated_kubeconfig_updates_the_secret_in_place(world):
    up(world, "search")
    secret_sync.sync_cluster_secrets()
    (before,) = managed_secrets(world)
    fingerprint = vcluster_env(1).cluster_secret.fingerprint
    # vcluster recreated: its kubeconfig secret comes back with new certificates.
    world.cluster.delete(SECRETS, "cluster-search-1-namespace", "vc-cluster-search-1")
    world.settle(0.3)
    assert secret_sync.sync_cluster_secrets()["updated"] == 1
    (after,) = managed_secrets(world)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["data"]["config"] != before["data"]["config"]
    assert vcluster_env(1).cluster_secret.fingerprint != fingerprint


def test_a_closed_pr_loses_its_secret_only_after_its_apps_are_gone(world):
    up(world, "payments")
    secret_sync.sync_cluster_secrets()
    world.settle(0.5)
    world.github.close(*SEED, 1)
    sync.sync_pull_requests()
    sync.sync_cluster()
    outcome = secret_sync.sync_cluster_secrets()
    assert outcome["deleted"] == 0 and len(managed_secrets(world)) == 1  # apps still there
    assert vcluster_env(1).cluster_secret.state == "deleting"
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.5)
    assert not world.cluster.list_objects(APPLICATIONS, "argocd")
    outcome = secret_sync.sync_cluster_secrets()
    assert outcome["deleted"] == 1 and managed_secrets(world) == []
    assert vcluster_env(1).cluster_secret.state == "deleted"


def test_a_reopened_pr_gets_its_secret_back(world):
    up(world, "payments")
    secret_sync.sync_cluster_secrets()
    world.github.close(*SEED, 1)
    sync.sync_pull_requests()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.5)
    sync.sync_cluster()
    secret_sync.sync_cluster_secrets()
    assert managed_secrets(world) == []
    assert vcluster_env(1).cluster_secret.state == "deleted"
    world.github.reopen(*SEED, 1)
    sync.sync_pull_requests()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.2)
    sync.sync_cluster()
    outcome = secret_sync.sync_cluster_secrets()
    assert outcome["created"] == 1 and len(managed_secrets(world)) == 1
    assert vcluster_env(1).cluster_secret.state == "synced"


def test_a_foreign_secret_holding_the_target_name_is_a_conflict(world):
    up(world, "search")
    name = "envportal-a1tan-app-ephemeraltest-pr-1"
    world.cluster.create(SECRETS, "argocd", {"metadata": {"name": name},
                                             "stringData": {"note": "not envportal's"}})  # fmt: skip
    outcome = secret_sync.sync_cluster_secrets()
    assert outcome["created"] == 0 and outcome["errors"] == 1
    record = vcluster_env(1).cluster_secret
    assert record.state == "conflict" and name in record.message
    assert "labels" not in world.cluster.get(SECRETS, "argocd", name)["metadata"]


def test_an_unmanaged_cluster_secret_for_the_same_server_is_left_alone(world):
    up(world, "search")
    world.cluster.create(SECRETS, "argocd", {
        "metadata": {"name": "hand-made", "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
        "stringData": {"name": "hand-made", "server": server_of("search", 1), "config": "{}"},
    })  # fmt: skip
    outcome = secret_sync.sync_cluster_secrets()
    assert outcome["created"] == 0 and managed_secrets(world) == []
    record = vcluster_env(1).cluster_secret
    assert record.state == "conflict" and "hand-made" in record.message
    assert (
        world.cluster.get(SECRETS, "argocd", "hand-made")["data"]["config"]
        == base64.b64encode(b"{}").decode()
    )


def test_a_malformed_or_localhost_kubeconfig_is_an_error_on_that_environment_only(world):
    up(world, "broken", "local", "fine")
    world.cluster.patch(SECRETS, "cluster-broken-1-namespace", "vc-cluster-broken-1",
                        {"data": {"config": base64.b64encode(b"{not: [yaml").decode()}})  # fmt: skip
    source = world.cluster.get(SECRETS, "cluster-local-2-namespace", "vc-cluster-local-2")
    config = yaml.safe_load(base64.b64decode(source["data"]["config"]))
    config["clusters"][0]["cluster"]["server"] = "https://localhost:8443"
    world.cluster.patch(SECRETS, "cluster-local-2-namespace", "vc-cluster-local-2",
                        {"data": {"config": base64.b64encode(yaml.safe_dump(config).encode()).decode()}})  # fmt: skip
    outcome = secret_sync.sync_cluster_secrets()
    assert (outcome["created"], outcome["errors"]) == (1, 2)
    assert vcluster_env(1).cluster_secret.state == "error"
    assert "not valid YAML" in vcluster_env(1).cluster_secret.message
    assert "https://localhost:8443" in vcluster_env(2).cluster_secret.message
    assert "--out-kube-config-server" in vcluster_env(2).cluster_secret.message
    assert vcluster_env(3).cluster_secret.state == "synced"


def test_two_runs_racing_on_the_same_snapshot_make_one_secret(world):
    up(world, "race")
    stale = kube_gateway.snapshot("argocd")  # both runs read the cluster before either wrote
    first = secret_sync.sync_cluster_secrets(stale)
    second = secret_sync.sync_cluster_secrets(stale)
    assert first["created"] == 1 and second["created"] == 0
    assert len(managed_secrets(world)) == 1
    assert ClusterSecret.objects.count() == 1


def test_key_material_never_appears_in_logs_pages_api_or_admin(
    world, client, caplog, django_user_model
):
    caplog.set_level(logging.DEBUG)
    up(world, "leak-check")
    secret_sync.sync_cluster_secrets()
    world.settle(1.0)
    sync.sync_all()
    source = world.cluster.get(SECRETS, "cluster-leak-check-1-namespace", "vc-cluster-leak-check-1")
    needles = ["-----BEGIN", "PRIVATE KEY"]
    for key in ("certificate-authority", "client-certificate", "client-key", "config"):
        encoded = source["data"][key]
        needles += [encoded[:40], base64.b64decode(encoded).decode()[30:70]]
    admin = django_user_model.objects.create_superuser("root", password="root-password-1")
    client.force_login(admin)
    record = ClusterSecret.objects.get()
    env = record.environment
    pages = [
        "/",
        "/environments/a1tan/app-ephemeraltest/1/vcluster/",
        "/api/v1/environments/",
        "/api/v1/environments/a1tan/app-ephemeraltest/1/vcluster/",
        "/admin/environments/clustersecret/",
        f"/admin/environments/clustersecret/{record.pk}/change/",
        "/admin/environments/environment/",
        f"/admin/environments/environment/{env.pk}/change/",
        "/admin/environments/event/",
        "/admin/environments/syncstatus/",
    ]
    bodies = {}
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        bodies[url] = response.content.decode()
    assert record.server in bodies["/environments/a1tan/app-ephemeraltest/1/vcluster/"]
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for needle in needles:
        assert needle not in logs, f"key material in the logs: {needle[:12]}…"
        for url, body in bodies.items():
            assert needle not in body, f"key material on {url}: {needle[:12]}…"
