"""The simulated controllers, on the demo scenario and on purpose-built ApplicationSets."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from cryptography import x509

from sandbox.controllers import (
    APPLICATIONS,
    APPLICATIONSETS,
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACES,
    SECRETS,
    STATEFULSETS,
)
from sandbox.httpserver import Response, serve
from sandbox.scenarios import SEED_OWNER, SEED_REPO, bootstrap, load_demo, seed_applicationsets
from sandbox.world import Timing, World

FAST = Timing(tick=0.05, sync=0.2, health=0.2, vcluster=0.2)


@pytest.fixture
def world():
    w = World(timing=FAST)
    yield w
    w.github.close()


def apps(world: World) -> dict[str, dict]:
    return {a["metadata"]["name"]: a for a in world.cluster.list_objects(APPLICATIONS, "argocd")}


def appset_error(world: World, name: str) -> str:
    appset = world.cluster.get(APPLICATIONSETS, "argocd", name)
    conditions = {c["type"]: c for c in appset["status"]["conditions"]}
    error = conditions["ErrorOccurred"]
    return error["message"] if error["status"] == "True" else ""


def cluster_secret(server: str) -> dict:
    return {
        "metadata": {"name": "cluster-x", "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
        "stringData": {"name": "x", "server": server, "config": "{}"},
    }


def test_the_demo_runs_the_seed_applicationsets_as_written(world):
    load_demo(world, evolve=False)
    assert [a["metadata"]["name"] for a in world.cluster.list_objects(APPLICATIONSETS, "argocd")][:3] == [
        "ephemeralcluster", "sampleapps", "sampleapps-ns",
    ]  # fmt: skip
    for written in seed_applicationsets():
        stored = world.cluster.get(APPLICATIONSETS, "argocd", written["metadata"]["name"])
        assert stored["spec"] == written["spec"]
    world.settle(1.0)
    found = apps(world)
    for name in ("sampleapp-ns-login-page-1", "cluster-login-page-1", "sampleapp-login-page-1"):
        assert name in found
    assert found["sampleapp-ns-login-page-1"]["status"]["health"]["status"] == "Healthy"
    assert found["sampleapp-ns-payments-3"]["status"]["health"]["status"] == "Degraded"
    assert found["sampleapp-ns-checkout-v2-2"]["status"]["health"]["status"] == "Progressing"
    # The vcluster app waits for its Argo CD cluster secret (envportal's job to create).
    waiting = found["sampleapp-login-page-1"]["status"]
    assert waiting["health"]["status"] == "Unknown"
    assert "there are no clusters with this URL" in waiting["conditions"][0]["message"]
    # The invalid branch name shows up as the API's rejection on each seed ApplicationSet.
    for name in ("sampleapps", "sampleapps-ns", "ephemeralcluster"):
        assert "feature/login-4" in appset_error(world, name)
        assert "a lowercase RFC 1123 subdomain" in appset_error(world, name)
    # The opt-in label filter and branch_slug of the second team.
    assert "storefront-feature-cart-redesign-1" in found
    assert not any("new-search" in name for name in found)


def test_a_synced_vcluster_writes_its_kubeconfig_secret(world):
    load_demo(world, evolve=False)
    world.settle(1.0)
    ns = "cluster-login-page-1-namespace"
    sts = world.cluster.get(STATEFULSETS, ns, "cluster-login-page-1")
    assert sts["status"]["readyReplicas"] == 1
    secret = world.cluster.get(SECRETS, ns, "vc-cluster-login-page-1")
    assert "labels" not in secret["metadata"]  # the seed's 0.x chart labels nothing (0.24+ does)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    config = yaml.safe_load(data["config"])
    server = "https://cluster-login-page-1.cluster-login-page-1-namespace.svc.cluster.local"
    assert config["clusters"][0]["cluster"]["server"] == server
    ca = x509.load_pem_x509_certificate(data["certificate-authority"].encode())
    client = x509.load_pem_x509_certificate(data["client-certificate"].encode())
    assert client.issuer == ca.subject
    assert data["client-key"].startswith("-----BEGIN EC PRIVATE KEY-----")


def test_a_cluster_secret_lets_the_vcluster_app_sync(world):
    load_demo(world, evolve=False)
    world.settle(0.5)
    server = "https://cluster-login-page-1.cluster-login-page-1-namespace.svc.cluster.local"
    world.cluster.create(SECRETS, "argocd", cluster_secret(server))
    world.settle(1.0)
    status = apps(world)["sampleapp-login-page-1"]["status"]
    assert status["sync"]["status"] == "Synced"
    assert status["health"]["status"] == "Healthy"


REFRESH = "argocd.argoproj.io/application-set-refresh"


def test_the_refresh_annotation_lists_prs_at_once_and_is_removed(world):
    load_demo(world, evolve=False)
    world.settle(0.3)
    pr = world.github.open_pr(SEED_OWNER, SEED_REPO, "hotfix", "Hotfix", "maria")
    world.tick()
    assert f"sampleapp-ns-hotfix-{pr['number']}" not in apps(world)  # requeueAfterSeconds: 120
    world.cluster.patch(
        APPLICATIONSETS, "argocd", "sampleapps-ns",
        {"metadata": {"annotations": {"argocd.argoproj.io/application-set-refresh": "true"}}},
    )  # fmt: skip
    world.tick()
    assert f"sampleapp-ns-hotfix-{pr['number']}" in apps(world)
    # The seed's open `feature/login` PR makes this reconcile fail (invalid name): Argo CD
    # keeps the annotation then, and removes it only after a reconcile that succeeded.
    annotations = world.cluster.get(APPLICATIONSETS, "argocd", "sampleapps-ns")["metadata"]
    assert REFRESH in (annotations.get("annotations") or {})
    world.cluster.patch(
        APPLICATIONSETS, "argocd", "storefront-previews",
        {"metadata": {"annotations": {REFRESH: "true"}}},
    )  # fmt: skip
    world.tick()
    annotations = world.cluster.get(APPLICATIONSETS, "argocd", "storefront-previews")["metadata"]
    assert REFRESH not in (annotations.get("annotations") or {})


def test_an_invalid_name_keeps_closed_prs_apps_as_argo_cd_does(world):
    load_demo(world, evolve=False)
    world.settle(0.5)
    assert "sampleapp-ns-login-page-1" in apps(world)
    world.github.close(SEED_OWNER, SEED_REPO, 1)
    world.appsets.next_due.clear()
    world.settle(0.5)
    # createOrUpdateInCluster failed for `feature/login`: the reconcile ends before deletion
    assert "sampleapp-ns-login-page-1" in apps(world)
    status = world.cluster.get(APPLICATIONSETS, "argocd", "sampleapps-ns")["status"]
    error = next(c for c in status["conditions"] if c["type"] == "ErrorOccurred")
    assert (error["status"], error["reason"]) == ("True", "UpdateApplicationError")
    generated = next(c for c in status["conditions"] if c["type"] == "ParametersGenerated")
    assert generated["status"] == "True"
    world.github.close(SEED_OWNER, SEED_REPO, 4)  # the invalid one goes: deletion resumes
    world.appsets.next_due.clear()
    world.settle(0.5)
    assert "sampleapp-ns-login-page-1" not in apps(world)


def test_a_closed_pr_loses_its_apps_but_its_namespace_stays(world):
    load_demo(world, evolve=False)
    world.settle(1.0)
    assert world.cluster.find(DEPLOYMENTS, "sampleapp-ns-login-page-1-namespace", "sampleapp")
    world.github.close(SEED_OWNER, SEED_REPO, 4)  # the invalid name would block deletion
    world.github.close(SEED_OWNER, SEED_REPO, 1)
    world.appsets.next_due.clear()  # as if requeueAfterSeconds had passed
    world.settle(0.5)
    assert "sampleapp-ns-login-page-1" not in apps(world)
    assert (
        world.cluster.find(DEPLOYMENTS, "sampleapp-ns-login-page-1-namespace", "sampleapp") is None
    )
    # Argo CD leaves a namespace it created behind.
    assert world.cluster.find(NAMESPACES, "", "sampleapp-ns-login-page-1-namespace") is not None


def test_a_push_moves_the_app_to_the_new_head(world):
    load_demo(world, evolve=False)
    world.settle(1.0)
    sha = world.github.push(SEED_OWNER, SEED_REPO, 1)
    world.appsets.next_due.clear()
    world.settle(1.0)
    app = apps(world)["sampleapp-ns-login-page-1"]
    assert app["spec"]["source"]["targetRevision"] == sha
    assert app["status"]["sync"]["revision"] == sha
    assert app["status"]["history"][-1]["revision"] == sha


def test_the_plugin_generator_calls_the_plugin_and_keeps_apps_when_it_fails(world):
    bootstrap(world)
    answer = {"status": 200, "parameters": [{"number": "7", "branch_slug": "login"}]}
    seen = []

    def plugin(request):
        seen.append((request.headers.get("authorization"), json.loads(request.body)))
        if answer["status"] != 200:
            return Response.json({"error": "down"}, answer["status"])
        return Response.json({"output": {"parameters": answer["parameters"]}})

    server, url = serve(plugin)
    try:
        world.cluster.create(CONFIGMAPS, "argocd", {
            "metadata": {"name": "envportal-plugin"},
            "data": {"baseUrl": url, "token": "$plugin.envportal.token", "requestTimeout": "2"},
        })  # fmt: skip
        world.cluster.patch(
            SECRETS, "argocd", "argocd-secret",
            {"data": {"plugin.envportal.token": base64.b64encode(b"s3cret").decode()}},
        )  # fmt: skip
        world.cluster.create(APPLICATIONSETS, "argocd", {
            "metadata": {"name": "managed"},
            "spec": {
                "goTemplate": True,
                "generators": [{"plugin": {"configMapRef": {"name": "envportal-plugin"},
                                           "input": {"parameters": {"repository": "a1tan/app"}}}}],
                "template": {"metadata": {"name": "pr-{{.number}}-{{.branch_slug}}"},
                             "spec": {"project": "default",
                                      "source": {"repoURL": "https://example.test/x.git", "path": "charts/x"},
                                      "destination": {"server": "https://kubernetes.default.svc",
                                                      "namespace": "pr-{{.number}}"}}},
            },
        })  # fmt: skip
        world.tick()
        assert "pr-7-login" in apps(world)
        token, body = seen[-1]
        assert token == "Bearer s3cret"
        assert body == {
            "applicationSetName": "managed",
            "input": {"parameters": {"repository": "a1tan/app"}},
        }
        answer["status"] = 500
        world.appsets.next_due.clear()
        world.tick()
        assert "pr-7-login" in apps(world)  # kept while the plugin errors
        assert "error getting plugin from generator" in appset_error(world, "managed")
        answer.update(status=200, parameters=[])
        world.appsets.next_due.clear()
        world.tick()
        assert "pr-7-login" not in apps(world)
    finally:
        server.shutdown()


def test_everything_the_controllers_write_fits_the_argo_cd_schemas(world):
    load_demo(world, evolve=False)
    world.settle(1.0)
    for kind in (APPLICATIONS, APPLICATIONSETS):
        validator = world.cluster.validators[kind]
        for obj in world.cluster.list_objects(kind, "argocd"):
            causes, warnings = validator.validate(obj)
            assert (causes, warnings) == ([], []), obj["metadata"]["name"]


def test_the_demo_has_a_deploy_behind_its_pr_head(world):
    load_demo(world, evolve=False)
    world.settle(2.5)  # the first revision deploys, then the demo pushes a new commit
    world.cluster.patch(
        APPLICATIONSETS, "argocd", "sampleapps-ns",
        {"metadata": {"annotations": {"argocd.argoproj.io/application-set-refresh": "true"}}},
    )  # fmt: skip
    world.settle(0.5)
    head = world.github.get_pr(SEED_OWNER, SEED_REPO, 6)["head"]["sha"]
    status = apps(world)["sampleapp-ns-dark-mode-6"]["status"]
    assert status["sync"] == {**status["sync"], "status": "OutOfSync", "revision": head}
    assert status["history"][-1]["revision"] != head
    assert status["health"]["status"] == "Healthy"


def test_the_scale_scenario_gives_every_pr_both_flavours(world):
    from sandbox.scenarios import load_scale

    load_scale(world, repos=2, prs=10)
    world.settle(0.3)
    names = set(apps(world))
    assert len(names) == 30
    assert "repo-01-sampleapp-ns-feature-scale-1-1" in names
    assert "repo-00-cluster-feature-scale-0-1" in names


@pytest.mark.parametrize("go_template", [True, False])
def test_generator_values_are_templated_under_values(world, go_template):
    bootstrap(world)
    world.github.add_repo("acme", "shop")
    world.github.open_pr("acme", "shop", "wish-list", "Wish list", "maria")
    ref = "{{.values.team}}-{{.number}}" if go_template else "{{values.team}}-{{number}}"
    world.cluster.create(APPLICATIONSETS, "argocd", {
        "metadata": {"name": "shop"},
        "spec": {
            "goTemplate": go_template,
            "generators": [{"pullRequest": {
                "github": {"owner": "acme", "repo": "shop"},
                "values": {"team": "shop" + ("-{{.author}}" if go_template else "-{{author}}")},
            }}],
            "template": {
                "metadata": {"name": ref},
                "spec": {"project": "default",
                         "source": {"repoURL": "https://github.com/acme/shop.git", "path": "chart"},
                         "destination": {"server": "https://kubernetes.default.svc",
                                         "namespace": ref}},
            },
        },
    })  # fmt: skip
    world.tick()
    assert "shop-maria-1" in apps(world)
