"""The Helm chart: Helm's own lint (helm-sdkpy) and rendering (helm-python-sdk, Helm's Go SDK),
every rendered manifest validated against Kubernetes' schemas (kubernetes-validate), RBAC equal
to the Kubernetes calls the code makes, pod security `restricted`, and the production settings
the chart gives passing `check --deploy`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from environments import kube_gateway, tasks

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "envportal"
KUBERNETES = "1.34.0"
FULL = {
    "image": {"repository": "registry.example.com/envportal", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "registry"}],
    "allowedHosts": ["envportal.example.com"],
    "portalUrl": "https://envportal.example.com",
    "csrfTrustedOrigins": ["https://envportal.example.com"],
    "argocd": {"namespace": "argocd", "url": "https://argocd.example.com"},
    "github": {"apiUrl": "https://github.example.com/api/v3"},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "host": "envportal.example.com",
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "tls": [{"secretName": "envportal-tls"}],
    },
    "networkPolicy": {"enabled": True},
    "bundled": {"redis": {"enabled": True}, "postgresql": {"enabled": True}},
    "serviceAccount": {"annotations": {"example.com/role": "envportal"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tools"}],
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="envportal", namespace="envportal", is_install=True)
    docs = []
    for path, text in files.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def test_helm_lint_finds_nothing_to_fix():
    import helm_sdkpy

    result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(CHART)))
    assert result["Errors"] is None
    # Helm's severities: 1 info (e.g. "icon is recommended"), 2 warning, 4 error
    assert [m for m in result["Messages"] if m["Severity"] >= 2] == []


def test_the_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [{}, FULL], ids=["default", "full"])
def test_every_rendered_manifest_is_valid_kubernetes(values):
    import kubernetes_validate

    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Job", "ServiceAccount", "ClusterRole",
            "Role", "RoleBinding", "ClusterRoleBinding"} <= kinds  # fmt: skip
    if values:
        assert {"Ingress", "NetworkPolicy"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_argo_cd_may_call_the_plugin_service_by_its_cluster_name():
    docs = render({})
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "envportal"
    )
    plugin = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "envportal-plugin"
    )
    assert plugin["metadata"]["namespace"] == "argocd"
    host = plugin["data"]["baseUrl"].removeprefix("http://").split(":")[0]
    assert host == "envportal-plugin.envportal.svc.cluster.local"
    assert host in config["data"]["ALLOWED_HOSTS"].split(",")
    assert any(d["kind"] == "Service" and d["metadata"]["name"] == "envportal-plugin" for d in docs)


def test_exactly_one_beat_and_restricted_pods():
    docs = render(FULL)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    beat = deployments["envportal-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    worker = deployments["envportal-worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > 300  # the Celery hard time limit
    # Two pools: everything, and a small one for what a person waits for.
    interactive = deployments["envportal-worker-interactive"]["spec"]["template"]["spec"]
    assert interactive["terminationGracePeriodSeconds"] > 300
    queues = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"][-1]
        for name, d in deployments.items()
        if "worker" in name
    }
    assert queues == {
        "envportal-worker": "celery,interactive",
        "envportal-worker-interactive": "interactive",
    }
    assert {q.name for q in settings.CELERY_TASK_QUEUES} == {"celery", "interactive"}
    assert set(settings.CELERY_TASK_ROUTES) == {
        tasks.refresh_applicationsets.name,
        tasks.run_action.name,
    }
    policy = next(d for d in docs if d["metadata"]["name"] == "envportal-background")
    components = policy["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert "worker-interactive" in components
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"]
    web = deployments["envportal-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # secrets come from the existing Secret, never from values
    names = {e["name"]: e for e in web["env"]}
    assert names["SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "envportal"


def granted(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    return {(verb, resource) for r in rules for verb in r["verbs"] for resource in r["resources"]}


def test_rbac_grants_exactly_what_the_code_calls():
    assert granted(render({})) == kube_gateway.API_CALLS


@pytest.mark.django_db
def test_the_code_calls_only_what_the_gateway_declares(world):
    """Drive every path that talks to Kubernetes on the sandbox and read back what it saw."""
    from environments import cleanup, lifecycle, secret_sync, sync
    from environments.models import Repository

    world.kube.reset_stats()
    world.github.open_pr("a1tan", "app-ephemeraltest", "payments", "Payments", "amara")
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    secret_sync.sync_cluster_secrets()
    lifecycle._work_redeploy(Repository.objects.get().pulls.get().environments.first())
    world.settle(0.5)
    secret_sync.sync_cluster_secrets()  # the refresh after a write
    world.github.close("a1tan", "app-ephemeraltest", 1)
    sync.sync_pull_requests()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.6)
    sync.sync_cluster()
    secret_sync.sync_cluster_secrets()
    cleanup.clean_leftovers()
    cleanup.sweep()
    seen = {tuple(key.split(" ", 1)) for key in world.kube.stats if " " in key}
    assert seen <= kube_gateway.API_CALLS, seen - kube_gateway.API_CALLS
    assert {("delete", "namespaces"), ("create", "secrets"), ("delete", "secrets"),
            ("patch", "applications"), ("patch", "applicationsets")} <= seen  # fmt: skip


def test_the_charts_production_settings_pass_check_deploy():
    config = next(d for d in render(FULL) if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == "envportal")  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "DJANGO"))},
        **config["data"],
        "SECRET_KEY": "x" * 30 + "-not-the-dev-key-" + "y" * 30,
        "DATABASE_URL": "postgres://envportal:pw@db.example.com:5432/envportal",
        "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
        "REDIS_URL": "redis://redis.example.com:6379/1",
        "ENVPORTAL_LOCAL_DIR": "/tmp/envportal-check",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
