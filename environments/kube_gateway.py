"""Kubernetes, through the official client: the only module that imports it.

A cluster sync reads everything it needs with one list call per kind (never a call per PR) and
gets plain dicts back. Library errors become the project's own (`environments.errors`), and
transient ones are retried here, with one bounded backoff policy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from environments.errors import (
    Conflict,
    GatewayError,
    Invalid,
    NotFound,
    PermissionDenied,
    Transient,
)

log = logging.getLogger(__name__)

ARGO_GROUP, ARGO_VERSION = "argoproj.io", "v1alpha1"
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds)
RETRY_DELAYS = (0.2, 0.6, 1.5)
APPSET_REFRESH = "argocd.argoproj.io/application-set-refresh"
APP_REFRESH = "argocd.argoproj.io/refresh"

Obj = dict[str, Any]

# Every (verb, resource) this module uses; the Helm chart's RBAC is checked against it.
API_CALLS = {
    ("list", "applicationsets"),
    ("list", "applications"),
    ("list", "namespaces"),
    ("list", "statefulsets"),
    ("list", "secrets"),
    ("patch", "applicationsets"),
    ("patch", "applications"),
    ("create", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("delete", "namespaces"),
}

_lock = threading.Lock()
_api_client: client.ApiClient | None = None


def api_client() -> client.ApiClient:
    """In-cluster config first (a pod's service account), then KUBECONFIG or ~/.kube/config."""
    global _api_client
    with _lock:
        if _api_client is None:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                path = settings.KUBECONFIG or os.path.expanduser(
                    config.KUBE_CONFIG_DEFAULT_LOCATION
                )
                try:
                    config.load_kube_config(config_file=path, client_configuration=configuration)
                except (ConfigException, OSError) as exc:
                    raise PermissionDenied(
                        f"no usable Kubernetes configuration ({path}): {exc}"
                    ) from exc
            # One kept-alive connection per concurrent writer (a full pool opens new TLS ones).
            configuration.connection_pool_maxsize = settings.KUBERNETES_WRITE_CONCURRENCY + 4
            _api_client = client.ApiClient(configuration)
        return _api_client


def reset_client() -> None:
    """Forget the configured client (tests switch clusters)."""
    global _api_client
    with _lock:
        _api_client = None


def _translate(exc: Exception, what: str) -> GatewayError:
    if isinstance(exc, ApiException):
        reason = ""
        try:
            reason = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            reason = ""
        detail = f"{what}: {exc.status} {reason or exc.reason}".strip()
        if exc.status == 404:
            return NotFound(detail)
        if exc.status == 409:
            return Conflict(detail)
        if exc.status in (401, 403):
            return PermissionDenied(detail)
        if exc.status == 422:
            return Invalid(detail)
        return Transient(detail)
    return Transient(f"{what}: Kubernetes unreachable ({type(exc).__name__})")


def _call[T](what: str, fn: Callable[[], T]) -> T:
    """Run one API call; retry transient failures with a short, bounded backoff."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            return fn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            error = _translate(exc, what)
            if not isinstance(error, Transient) or delay is None:
                raise error from exc
            log.info("kubernetes %s failed (attempt %d): %s; retrying", what, attempt + 1, error)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _items(response: Any) -> list[Obj]:
    data = json.loads(_body(response)) if hasattr(response, "data") else response
    return list(data.get("items") or [])


def _body(response: Any) -> bytes:
    """Read a `_preload_content=False` response to its end and give its connection back to
    the pool (left alone, every call would open a new TLS connection)."""
    try:
        return bytes(response.data)
    finally:
        response.release_conn()


@dataclass
class ClusterSnapshot:
    """Everything a cluster sync needs, read with one list call per kind."""

    applicationsets: list[Obj]
    applications: list[Obj]
    namespaces: set[str]
    statefulsets: dict[tuple[str, str], Obj]  # (namespace, name) → StatefulSet
    secrets: dict[tuple[str, str], Obj]  # (namespace, name) → Secret (vcluster and cluster secrets)
    requests: int = 0
    # name → {"uid", "created"} of each namespace (for clean-up: whose it is, and since when)
    namespace_meta: dict[str, dict[str, str]] = field(default_factory=dict)


def _custom_list(plural: str, namespace: str) -> list[Obj]:
    api = client.CustomObjectsApi(api_client())
    return _items(
        api.list_namespaced_custom_object(
            ARGO_GROUP, ARGO_VERSION, namespace, plural, _request_timeout=REQUEST_TIMEOUT
        )
    )


def list_applicationsets(namespace: str) -> list[Obj]:
    """https://argo-cd.readthedocs.io/en/stable/operator-manual/applicationset/ (CRD list)"""
    return _call("list applicationsets", lambda: _custom_list("applicationsets", namespace))


def list_applications(namespace: str) -> list[Obj]:
    """https://argo-cd.readthedocs.io/en/stable/user-guide/application-specification/ (CRD list)"""
    return _call("list applications", lambda: _custom_list("applications", namespace))


def _raw_list(fn: Callable[..., Any], **kwargs: Any) -> list[Obj]:
    # _preload_content=False: plain JSON, skipping the client's slow model deserialization.
    return _items(fn(_preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs))


def list_namespaces() -> dict[str, dict[str, str]]:
    """Namespaces not being deleted: name → {"uid", "created"} (creationTimestamp).

    https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/namespace-v1/#list-list-or-watch-objects-of-kind-namespace
    """
    core = client.CoreV1Api(api_client())
    items = _call("list namespaces", lambda: _raw_list(core.list_namespace))
    return {
        ns["metadata"]["name"]: {
            "uid": str(ns["metadata"].get("uid", "")),
            "created": str(ns["metadata"].get("creationTimestamp", "")),
        }
        for ns in items
        if not ns["metadata"].get("deletionTimestamp")
    }


def list_vcluster_statefulsets() -> dict[tuple[str, str], Obj]:
    """vcluster control planes (label app=vcluster) in every namespace.

    https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/stateful-set-v1/#list-list-or-watch-objects-of-kind-statefulset
    """
    apps = client.AppsV1Api(api_client())
    items = _call(
        "list statefulsets",
        lambda: _raw_list(apps.list_stateful_set_for_all_namespaces, label_selector="app=vcluster"),
    )
    return {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in items}


def list_opaque_secrets() -> dict[tuple[str, str], Obj]:
    """Opaque Secrets in every namespace: vcluster kubeconfigs (`vc-<release>`, which vcluster
    before 0.24 does not label) and Argo CD cluster secrets. One call, filtered by the caller.

    https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/#list-list-or-watch-objects-of-kind-secret
    """
    core = client.CoreV1Api(api_client())
    items = _call(
        "list secrets",
        lambda: _raw_list(core.list_secret_for_all_namespaces, field_selector="type=Opaque"),
    )
    return {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in items}


def snapshot(argocd_namespace: str) -> ClusterSnapshot:
    """Read the cluster: five list calls, whatever the number of PRs."""
    applicationsets = list_applicationsets(argocd_namespace)
    applications = list_applications(argocd_namespace)
    namespaces = list_namespaces()
    return ClusterSnapshot(
        applicationsets=applicationsets,
        applications=applications,
        namespaces=set(namespaces),
        namespace_meta=namespaces,
        statefulsets=list_vcluster_statefulsets(),
        secrets=list_opaque_secrets(),
        requests=5,
    )


def annotate(plural: str, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
    """Merge-patch annotations of an ApplicationSet or Application.

    https://argo-cd.readthedocs.io/en/stable/operator-manual/applicationset/Generators-Git/#the-argocdargoprojioapplication-set-refresh-annotation
    """
    api = client.CustomObjectsApi(api_client())
    body = {"metadata": {"annotations": annotations}}
    _call(
        f"patch {plural}/{name}",
        lambda: api.patch_namespaced_custom_object(
            ARGO_GROUP, ARGO_VERSION, namespace, plural, name, body,
            _request_timeout=REQUEST_TIMEOUT,
        ),
    )  # fmt: skip


def refresh_applicationset(namespace: str, name: str) -> None:
    """Ask the ApplicationSet controller to re-run its generators now."""
    annotate("applicationsets", namespace, name, {APPSET_REFRESH: "true"})


def refresh_application(namespace: str, name: str, hard: bool = True) -> None:
    """Ask the Application controller to refresh (hard: drop its manifest cache)."""
    annotate("applications", namespace, name, {APP_REFRESH: "hard" if hard else "normal"})


def create_secret(namespace: str, body: Obj) -> None:
    """https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/#create-create-a-secret"""
    core = client.CoreV1Api(api_client())
    manifest: Any = body  # the client serializes plain dicts as they are
    _call(
        f"create secret {body['metadata']['name']}",
        lambda: _body(
            core.create_namespaced_secret(
                namespace, manifest, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        ),
    )


def replace_secret(namespace: str, name: str, body: Obj) -> None:
    """Replace, guarded by the body's resourceVersion (409 Conflict when it moved on).

    https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/#update-replace-the-specified-secret
    """
    core = client.CoreV1Api(api_client())
    manifest: Any = body
    _call(
        f"update secret {name}",
        lambda: _body(
            core.replace_namespaced_secret(
                name, namespace, manifest, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        ),
    )


def delete_secret(namespace: str, name: str, uid: str) -> None:
    """Delete, only if it is still the object we looked at (uid precondition).

    https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/#delete-delete-a-secret
    """
    core = client.CoreV1Api(api_client())
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
    with contextlib.suppress(NotFound):  # already gone: the goal is reached
        _call(
            f"delete secret {name}",
            lambda: _body(
                core.delete_namespaced_secret(
                    name,
                    namespace,
                    body=options,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            ),
        )


def delete_namespace(name: str, uid: str) -> None:
    """Delete a namespace (and so everything in it), only if it is still the object we looked
    at (uid precondition); already gone is done.

    https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/namespace-v1/#delete-delete-a-namespace
    """
    core = client.CoreV1Api(api_client())
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
    with contextlib.suppress(NotFound):
        _call(
            f"delete namespace {name}",
            lambda: _body(
                core.delete_namespace(
                    name, body=options, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            ),
        )
