"""The Kubernetes emulator, driven by the official kubernetes client and by kubectl."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from sandbox import pki
from sandbox.httpserver import serve, tls_context
from sandbox.kube import Cluster, KubeAPI, kubeconfig

GROUP, VERSION = "argoproj.io", "v1alpha1"


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    cluster = Cluster()
    api = KubeAPI(cluster, token="t0ken")
    cert = pki.serving_certificate(["127.0.0.1"])
    server, url = serve(api, tls=tls_context(cert.cert_pem, cert.key_pem))
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    path.write_text(kubeconfig(url, "t0ken", cert.ca_pem))
    api_client = config.new_client_from_config(str(path))
    core = client.CoreV1Api(api_client)
    for name in ("argocd", "default"):
        core.create_namespace({"metadata": {"name": name}})
    ca_file = path.with_name("ca.crt")
    ca_file.write_text(cert.ca_pem)
    yield {
        "cluster": cluster,
        "api": api,
        "url": url,
        "kubeconfig": path,
        "client": api_client,
        "ca": ca_file,
    }
    cluster.closed = True
    server.shutdown()


@pytest.fixture
def core(kube):
    return client.CoreV1Api(kube["client"])


@pytest.fixture
def custom(kube):
    return client.CustomObjectsApi(kube["client"])


def application(name: str, server: str = "https://kubernetes.default.svc") -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Application",
        "metadata": {"name": name, "labels": {"team": "qa"}},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://github.com/a1tan/app-ephemeraltest.git", "path": "charts/sampleapp"},
            "destination": {"server": server, "namespace": "ns1"},
        },
    }  # fmt: skip


def test_it_creates_and_reads_secrets_with_real_metadata(core):
    created = core.create_namespaced_secret(
        "default", {"metadata": {"generateName": "demo-"}, "stringData": {"token": "abc"}}
    )
    assert created.metadata.name.startswith("demo-") and len(created.metadata.name) == 10
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    assert created.data == {"token": "YWJj"} and created.type == "Opaque"
    read = core.read_namespaced_secret(created.metadata.name, "default")
    assert read.metadata.resource_version == created.metadata.resource_version


def test_not_found_and_already_exists_are_real_statuses(core):
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("nope", "default")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"
    core.create_namespaced_config_map("default", {"metadata": {"name": "once"}})
    with pytest.raises(ApiException) as twice:
        core.create_namespaced_config_map("default", {"metadata": {"name": "once"}})
    assert twice.value.status == 409
    assert json.loads(twice.value.body)["reason"] == "AlreadyExists"


def test_a_stale_resource_version_is_a_conflict(core):
    cm = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cas"}, "data": {"a": "1"}}
    )
    cm.data = {"a": "2"}
    core.replace_namespaced_config_map("cas", "default", cm)
    cm.data = {"a": "3"}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("cas", "default", cm)  # still the old resourceVersion
    assert conflict.value.status == 409
    assert "the object has been modified" in json.loads(conflict.value.body)["message"]


def test_a_slash_in_a_namespace_name_is_rejected_like_a_cluster_does(core):
    with pytest.raises(ApiException) as invalid:
        core.create_namespace({"metadata": {"name": "sampleapp-ns-feature/login-4-namespace"}})
    body = json.loads(invalid.value.body)
    assert invalid.value.status == 422 and body["reason"] == "Invalid"
    assert "a lowercase RFC 1123 label must consist of" in body["message"]
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_a_namespace_name_over_63_characters_is_rejected(core):
    with pytest.raises(ApiException) as invalid:
        core.create_namespace({"metadata": {"name": "a" * 64}})
    assert invalid.value.status == 422
    assert "must be no more than 63 characters" in json.loads(invalid.value.body)["message"]


def test_applications_are_validated_against_the_argo_cd_crd(custom):
    bad = application("bad-app")
    del bad["spec"]["destination"]
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", bad)
    body = json.loads(invalid.value.body)
    assert invalid.value.status == 422
    assert any(c["field"] == "spec.destination" for c in body["details"]["causes"])


def test_label_and_field_selectors(custom):
    for name, team in (("sel-a", "qa"), ("sel-b", "dev"), ("sel-c", "qa")):
        app = application(name)
        app["metadata"]["labels"] = (
            {"team": team, "tier": "web"} if name != "sel-c" else {"team": team}
        )
        custom.create_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", app)

    def names(**kwargs):
        found = custom.list_namespaced_custom_object(
            GROUP, VERSION, "argocd", "applications", **kwargs
        )
        return sorted(
            i["metadata"]["name"]
            for i in found["items"]
            if i["metadata"]["name"].startswith("sel-")
        )

    assert names(label_selector="team=qa") == ["sel-a", "sel-c"]
    assert names(label_selector="team!=qa") == ["sel-b"]
    assert names(label_selector="team in (dev, qa),tier") == ["sel-a", "sel-b"]
    assert names(label_selector="!tier") == ["sel-c"]
    assert names(label_selector="team notin (qa)") == ["sel-b"]
    assert names(field_selector="metadata.name=sel-b") == ["sel-b"]


def test_merge_and_json_patches(custom):
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "argocd", "applications", application("patchme")
    )
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "argocd", "applications", "patchme",
        {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}},
    )  # fmt: skip
    assert patched["metadata"]["annotations"] == {"argocd.argoproj.io/refresh": "hard"}
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "argocd", "applications", "patchme",
        [{"op": "remove", "path": "/metadata/annotations/argocd.argoproj.io~1refresh"}],
        _content_type="application/json-patch+json",
    )  # fmt: skip
    assert not patched["metadata"].get("annotations")


def test_finalizers_hold_a_delete_until_removed(custom):
    app = application("final")
    app["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", app)
    custom.delete_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", "final")
    held = custom.get_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", "final")
    assert held["metadata"]["deletionTimestamp"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "argocd", "applications", "final", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", "final")
    assert gone.value.status == 404


def test_deleting_a_namespace_deletes_what_is_in_it(core):
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_secret("doomed", {"metadata": {"name": "inside"}})
    core.delete_namespace("doomed")
    with pytest.raises(ApiException):
        core.read_namespaced_secret("inside", "doomed")
    with pytest.raises(ApiException) as gone:
        core.read_namespace("doomed")
    assert gone.value.status == 404


def test_owner_references_are_garbage_collected(custom, core):
    owner = custom.create_namespaced_custom_object(
        GROUP, VERSION, "argocd", "applicationsets", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ApplicationSet",
            "metadata": {"name": "owner"},
            "spec": {"generators": [], "template": {"metadata": {}, "spec": application("x")["spec"]}},
        })  # fmt: skip
    child = application("owned-child")
    child["metadata"]["ownerReferences"] = [
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApplicationSet", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]  # fmt: skip
    custom.create_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", child)
    custom.delete_namespaced_custom_object(GROUP, VERSION, "argocd", "applicationsets", "owner")
    with pytest.raises(ApiException):
        custom.get_namespaced_custom_object(GROUP, VERSION, "argocd", "applications", "owned-child")


def test_status_subresource_of_applicationsets(custom):
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ApplicationSet", "metadata": {"name": "st"},
        "spec": {"generators": [], "template": {"metadata": {}, "spec": application("x")["spec"]}},
        "status": {"conditions": [{"type": "ErrorOccurred", "status": "False", "message": "m", "reason": "r"}]},
    }  # fmt: skip
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "argocd", "applicationsets", body
    )
    assert "status" not in created  # ignored on create, as with a status subresource
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "argocd", "applicationsets", "st", {"status": body["status"]}
    )
    read = custom.get_namespaced_custom_object(GROUP, VERSION, "argocd", "applicationsets", "st")
    assert read["status"]["conditions"][0]["type"] == "ErrorOccurred"
    assert read["metadata"]["generation"] == 1


def test_watch_streams_changes(kube, core):
    core.create_namespace({"metadata": {"name": "watched"}})
    listed = core.list_namespaced_config_map("watched")
    events = []

    def consume():
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_config_map, "watched",
            resource_version=listed.metadata.resource_version, timeout_seconds=5,
        ):  # fmt: skip
            events.append((event["type"], event["object"].metadata.name))
            if len(events) == 2:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    core.create_namespaced_config_map("watched", {"metadata": {"name": "w1"}})
    core.delete_namespaced_config_map("w1", "watched")
    thread.join(timeout=10)
    assert events == [("ADDED", "w1"), ("DELETED", "w1")]


def test_a_denied_verb_is_forbidden(kube, custom):
    kube["api"].faults.denied = {("patch", "applicationsets")}
    try:
        with pytest.raises(ApiException) as denied:
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                "argocd",
                "applicationsets",
                "st",
                {"metadata": {"labels": {"a": "b"}}},
            )
        assert denied.value.status == 403
        assert "cannot patch resource" in json.loads(denied.value.body)["message"]
    finally:
        kube["api"].faults.denied = set()


def test_a_wrong_token_is_unauthorized(kube):
    cfg = client.Configuration()
    cfg.host = kube["url"]
    cfg.ssl_ca_cert = str(kube["ca"])
    cfg.api_key = {"authorization": "Bearer wrong"}
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(client.ApiClient(cfg)).list_namespace()
    assert denied.value.status == 401


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_create_get_label_annotate_delete(kube, tmp_path):
    env = {"KUBECONFIG": str(kube["kubeconfig"]), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def kubectl(*args, stdin=None):
        result = subprocess.run(
            [KUBECTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    manifest = json.dumps(application("via-kubectl"))
    kubectl("create", "-n", "argocd", "-f", "-", stdin=manifest)
    kubectl("label", "-n", "argocd", "applications.argoproj.io", "via-kubectl", "flavour=namespace")
    kubectl("annotate", "-n", "argocd", "app", "via-kubectl", "argocd.argoproj.io/refresh=hard")
    out = kubectl("get", "applications.argoproj.io", "-n", "argocd", "-l", "flavour=namespace")
    assert "via-kubectl" in out and "NAME" in out
    got = json.loads(kubectl("get", "app", "via-kubectl", "-n", "argocd", "-o", "json"))
    assert got["metadata"]["annotations"]["argocd.argoproj.io/refresh"] == "hard"
    kubectl("delete", "-n", "argocd", "app", "via-kubectl")
    out = kubectl(
        "get", "applications.argoproj.io", "-n", "argocd", "-l", "flavour=namespace", "-o", "name"
    )
    assert out.strip() == ""


def test_injected_faults_answer_429_with_retry_after_and_500(kube, core):
    faults = kube["api"].faults
    faults.error_rate, faults.modes = 1.0, ("429",)
    try:
        with pytest.raises(ApiException) as throttled:
            core.list_namespace()
        assert throttled.value.status == 429
        assert throttled.value.headers["Retry-After"] == "1"
        faults.modes = ("500",)
        with pytest.raises(ApiException) as failed:
            core.list_namespace()
        assert failed.value.status == 500
    finally:
        faults.error_rate = 0.0
