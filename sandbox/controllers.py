"""Simulated controllers on the emulated cluster, each doing what its real one does, on a tick.

- `ApplicationSetController`: the Pull Request and Plugin generators, template rendering,
  create/update/delete of owned Applications, status conditions, the refresh annotation.
- `ApplicationController`: sync and health over time, destination clusters from cluster
  secrets, the resources finalizer, the refresh annotation.
- `VClusterSimulator`: the StatefulSet, Service, pod and `vc-<release>` kubeconfig Secret of
  each synced vcluster Helm release.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import logging
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from environments import argo_templates as argo_template
from sandbox import pki
from sandbox.github import GitHub
from sandbox.kube import KIND_BY_PLURAL, ApiError, Cluster, Obj, now_rfc3339

log = logging.getLogger("sandbox.controllers")

APPLICATIONS = KIND_BY_PLURAL[("argoproj.io", "applications")]
APPLICATIONSETS = KIND_BY_PLURAL[("argoproj.io", "applicationsets")]
NAMESPACES = KIND_BY_PLURAL[("", "namespaces")]
SECRETS = KIND_BY_PLURAL[("", "secrets")]
CONFIGMAPS = KIND_BY_PLURAL[("", "configmaps")]
SERVICES = KIND_BY_PLURAL[("", "services")]
PODS = KIND_BY_PLURAL[("", "pods")]
DEPLOYMENTS = KIND_BY_PLURAL[("apps", "deployments")]
STATEFULSETS = KIND_BY_PLURAL[("apps", "statefulsets")]

APPSET_REFRESH = "argocd.argoproj.io/application-set-refresh"
APP_REFRESH = "argocd.argoproj.io/refresh"
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
IN_CLUSTER = "https://kubernetes.default.svc"
DEFAULT_REQUEUE = 30 * 60  # DefaultPullRequestRequeueAfter
SECRET_TYPE_LABEL = "argocd.argoproj.io/secret-type"  # noqa: S105 - a label name


def condition(type_: str, status: str, reason: str, message: str) -> Obj:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_rfc3339(),
    }


def fake_sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - a stand-in git sha


MAX_ERROR_BACKOFF = 60.0  # seconds; a failing ApplicationSet is retried at least this often


class GeneratorError(Exception):
    pass


def templated_values(values: Obj, params: Obj, go_template: bool) -> Obj:
    """A generator's `values`, each rendered with its parameters (appendTemplatedValues):
    `values.<key>` for fasttemplate, a `values` map for goTemplate."""
    if not values:
        return {}
    try:
        rendered = argo_template.render(dict(values), params, go_template, [])
    except argo_template.TemplateError as exc:
        raise GeneratorError(f"failed to template values: {exc}") from exc
    if go_template:
        return {"values": rendered}
    return {f"values.{key}": value for key, value in rendered.items()}


@dataclass
class ApplicationSetController:
    cluster: Cluster
    github: GitHub
    namespace: str = "argocd"
    clock: Callable[[], float] = time.monotonic
    next_due: dict[str, float] = field(default_factory=dict)
    # A failed reconcile is retried with a growing delay (controller-runtime's rate limiter).
    backoff: dict[str, float] = field(default_factory=dict)
    seen: dict[str, tuple[Any, list[tuple[str, str]]]] = field(default_factory=dict)
    # Plugin generator: the last answer per ApplicationSet, kept when the plugin fails.
    github_requests: int = 0

    def tick(self) -> None:
        for appset in self.cluster.peek_all(APPLICATIONSETS, self.namespace):
            meta = appset["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            annotations = dict(meta.get("annotations") or {})
            refresh = APPSET_REFRESH in annotations
            uid = meta["uid"]
            # The watch: a new generation (spec edit) or changed annotations (the refresh
            # annotation set) reconcile at once; otherwise on requeueAfterSeconds or backoff.
            seen = (meta.get("generation"), sorted(annotations.items()))
            changed = self.seen.get(uid) != seen
            if changed or self.clock() >= self.next_due.get(uid, 0):
                self.seen[uid] = seen
                # Argo CD removes the refresh annotation only at the end of a reconcile that
                # succeeded; a failed one returns early and is retried with backoff.
                if self.reconcile(appset):
                    self.backoff.pop(uid, None)
                    if refresh:
                        self._patch_appset(
                            meta["name"], {"metadata": {"annotations": {APPSET_REFRESH: None}}}
                        )
                        # Its removal is no reason to reconcile again (upstream's predicate
                        # ignoreWhenAnnotationApplicationSetRefreshIsRemoved).
                        annotations.pop(APPSET_REFRESH)
                        self.seen[uid] = (meta.get("generation"), sorted(annotations.items()))
                else:
                    delay = min(max(1.0, self.backoff.get(uid, 0.5) * 2), MAX_ERROR_BACKOFF)
                    self.backoff[uid] = delay
                    self.next_due[uid] = min(self.next_due.get(uid, 0), self.clock() + delay)

    def _patch_appset(self, name: str, body: Obj, subresource: str = "") -> None:
        try:
            self.cluster.patch(APPLICATIONSETS, self.namespace, name, body, subresource=subresource)
        except ApiError as exc:
            log.warning("could not patch ApplicationSet %s: %s", name, exc.message)

    def reconcile(self, appset: Obj) -> bool:
        """One reconcile, as applicationset_controller.go orders it; False when it failed
        (generator error, or an Application it could not create or update)."""
        meta, spec = appset["metadata"], appset.get("spec") or {}
        go_template = bool(spec.get("goTemplate"))
        options = spec.get("goTemplateOptions") or []
        requeue = [DEFAULT_REQUEUE]
        desired: dict[str, Obj] = {}
        errors: list[str] = []
        generator_failed = False
        for generator in spec.get("generators") or []:
            kind = next(iter(generator), "")
            body = generator.get(kind) or {}
            if body.get("requeueAfterSeconds") is not None:
                requeue.append(int(body["requeueAfterSeconds"]))
            try:
                if kind == "pullRequest":
                    params_list = self._pull_request_params(body, go_template)
                elif kind == "plugin":
                    params_list = self._plugin_params(meta["name"], body, go_template)
                else:
                    raise GeneratorError(f"generator {kind!r} is not emulated by the sandbox")
            except GeneratorError as exc:
                errors.append(str(exc))
                generator_failed = True
                continue
            template = copy.deepcopy(spec.get("template") or {})
            if body.get("template"):
                template = merge_templates(template, body["template"])
            for params in params_list:
                try:
                    rendered = argo_template.render(template, params, go_template, options)
                except argo_template.TemplateError as exc:
                    errors.append(f"failed to render template: {exc}")
                    continue
                app = self._application(appset, rendered)
                desired[app["metadata"]["name"]] = app
        policy = (spec.get("syncPolicy") or {}).get("applicationsSync", "sync")
        write_errors = self._apply(appset, desired, policy, keep_existing=generator_failed)
        errors += write_errors
        self.next_due[meta["uid"]] = self.clock() + min(requeue[1:] or requeue)
        self._write_status(appset, errors, generator_failed, policy)
        return not generator_failed and not write_errors

    def _pull_request_params(self, body: Obj, go_template: bool) -> list[Obj]:
        github = body.get("github")
        if not github:
            raise GeneratorError("only the github provider is emulated by the sandbox")
        owner, repo = github.get("owner", ""), github.get("repo", "")
        pulls = self.github.list_open(owner, repo)
        if pulls is None:
            raise GeneratorError(
                f"error listing repos: error listing pull requests for {owner}/{repo}: "
                "GET: 404 Not Found"
            )
        # The real generator pages through 100 at a time without ETags.
        self.github_requests += max(1, math.ceil(len(pulls) / 100))
        wanted = set(github.get("labels") or [])
        filters = body.get("filters") or []
        result = []
        for pr in pulls:
            labels = [label["name"] for label in pr.get("labels", [])]
            if not wanted <= set(labels):
                continue
            if filters and not any(passes_filter(f, pr) for f in filters):
                continue
            params = argo_template.pull_request_params(
                number=pr["number"],
                branch=pr["head"]["ref"],
                target_branch=pr["base"]["ref"],
                head_sha=pr["head"]["sha"],
                author=pr["user"]["login"],
                title=pr["title"],
                labels=labels,
                go_template=go_template,
            )
            params.update(templated_values(body.get("values") or {}, params, go_template))
            result.append(params)
        return result

    def _plugin_params(self, appset_name: str, body: Obj, go_template: bool) -> list[Obj]:
        ref = (body.get("configMapRef") or {}).get("name", "")
        config = self.cluster.find(CONFIGMAPS, self.namespace, ref)
        if config is None:
            raise GeneratorError(
                f'error getting plugin from generator: configmap "{ref}" not found'
            )
        data = config.get("data") or {}
        base_url, token_ref = data.get("baseUrl", "").rstrip("/"), data.get("token", "")
        timeout = float(data.get("requestTimeout") or 30)
        token = self._resolve_token(token_ref)
        payload = {
            "applicationSetName": appset_name,
            "input": {"parameters": (body.get("input") or {}).get("parameters") or {}},
        }
        request = urllib.request.Request(  # noqa: S310 - the plugin URL is cluster configuration
            f"{base_url}/api/v1/getparams.execute",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise GeneratorError(f"error getting plugin from generator: {exc}") from exc
        # As Argo CD's client: a 2xx answer without output.parameters is zero parameters
        # (so every Application goes), not an error.
        params = ((answer or {}).get("output") or {}).get("parameters") or []
        if not isinstance(params, list):
            raise GeneratorError(
                "error getting plugin from generator: output.parameters is not a list"
            )
        result = []
        for p in params:
            item = {**p, "generator": {"input": payload["input"]}}
            item.update(templated_values(body.get("values") or {}, item, go_template))
            result.append(item)
        return result

    def _resolve_token(self, ref: str) -> str:
        """`$plugin.x.token` → argocd-secret's key; `$secret:key` → that secret's key."""
        if not ref.startswith("$"):
            return ref
        name, key = ("argocd-secret", ref[1:])
        if ":" in ref:
            name, key = ref[1:].split(":", 1)
        secret = self.cluster.find(SECRETS, self.namespace, name)
        value = ((secret or {}).get("data") or {}).get(key, "")
        return base64.b64decode(value).decode() if value else ""

    def _application(self, appset: Obj, rendered: Obj) -> Obj:
        meta = copy.deepcopy(rendered.get("metadata") or {})
        spec = (appset.get("spec") or {}).get("syncPolicy") or {}
        finalizers = meta.get("finalizers")
        if not finalizers and not spec.get("preserveResourcesOnDeletion"):
            finalizers = [RESOURCES_FINALIZER]
        app_meta = {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace") or appset["metadata"]["namespace"],
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
            "finalizers": finalizers or [],
            "ownerReferences": [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "ApplicationSet",
                    "name": appset["metadata"]["name"],
                    "uid": appset["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        return {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {k: v for k, v in app_meta.items() if v},
            "spec": rendered.get("spec") or {},
        }

    def _apply(
        self, appset: Obj, desired: dict[str, Obj], policy: str, keep_existing: bool
    ) -> list[str]:
        errors = []
        uid = appset["metadata"]["uid"]
        owned = {
            app["metadata"]["name"]: app
            for app in self.cluster.peek_all(APPLICATIONS, self.namespace)
            if any(r.get("uid") == uid for r in app["metadata"].get("ownerReferences") or [])
        }
        for name, app in desired.items():
            current = owned.get(name)
            try:
                if current is None:
                    self.cluster.create(APPLICATIONS, self.namespace, app)
                elif policy in ("sync", "create-update") and self._differs(current, app):
                    updated = copy.deepcopy(current)
                    updated["spec"] = app["spec"]
                    preserved = {
                        k: v
                        for k, v in (current["metadata"].get("annotations") or {}).items()
                        if k == APP_REFRESH or k.startswith("notified.notifications.argoproj.io")
                    }
                    updated["metadata"]["annotations"] = {
                        **(app["metadata"].get("annotations") or {}),
                        **preserved,
                    }
                    updated["metadata"]["labels"] = app["metadata"].get("labels") or {}
                    self.cluster.replace(APPLICATIONS, self.namespace, name, updated)
            except ApiError as exc:
                verb = "create" if current is None else "update"
                errors.append(
                    f"failed to {verb} Application {name!r}: {exc.message}"
                    if current is not None
                    else exc.message
                )
        # A failed create or update ends the reconcile before deletion (upstream returns the
        # error), so one PR with an invalid name keeps closed PRs' Applications alive.
        if errors or keep_existing or policy not in ("sync", "create-delete"):
            return errors
        for name, app in owned.items():
            if name in desired or app["metadata"].get("deletionTimestamp"):
                continue
            try:
                if not self._destination_known(app):
                    # removeFinalizerOnInvalidDestination: finalizer off first (argo-cd #5817).
                    self.cluster.patch(
                        APPLICATIONS, self.namespace, name, {"metadata": {"finalizers": None}}
                    )
                self.cluster.delete(APPLICATIONS, self.namespace, name)
            except ApiError as exc:
                errors.append(f"failed to delete Application {name!r}: {exc.message}")
        return errors

    def _destination_known(self, app: Obj) -> bool:
        server = ((app.get("spec") or {}).get("destination") or {}).get("server", "")
        return find_cluster_secret(self.cluster, self.namespace, server) is not None or (
            server.rstrip("/") in ("", IN_CLUSTER)
        )

    @staticmethod
    def _differs(current: Obj, desired: Obj) -> bool:
        return bool(
            current.get("spec") != desired.get("spec")
            or (current["metadata"].get("labels") or {})
            != (desired["metadata"].get("labels") or {})
        )

    def _write_status(
        self, appset: Obj, errors: list[str], generator_failed: bool, policy: str = "sync"
    ) -> None:
        uid = appset["metadata"]["uid"]
        apps = [
            app
            for app in self.cluster.peek_all(APPLICATIONS, self.namespace)
            if any(r.get("uid") == uid for r in app["metadata"].get("ownerReferences") or [])
        ]
        if errors:
            if generator_failed:
                reason = "ApplicationGenerationFromParamsError"
            elif policy in ("sync", "create-update"):  # AllowUpdate: createOrUpdateInCluster
                reason = "UpdateApplicationError"
            else:
                reason = "CreateApplicationError"
            message = "; ".join(errors)
            conditions = [
                condition("ErrorOccurred", "True", reason, message),
                condition("ParametersGenerated", "False", "ErrorOccurred", message)
                if generator_failed
                else condition(
                    "ParametersGenerated",
                    "True",
                    "ParametersGenerated",
                    "Successfully generated parameters for all Applications",
                ),
                condition("ResourcesUpToDate", "False", reason, message),
            ]
        else:
            conditions = [
                condition(
                    "ErrorOccurred",
                    "False",
                    "ApplicationSetUpToDate",
                    "All applications have been generated successfully",
                ),
                condition(
                    "ParametersGenerated",
                    "True",
                    "ParametersGenerated",
                    "Successfully generated parameters for all Applications",
                ),
                condition(
                    "ResourcesUpToDate",
                    "True",
                    "ApplicationSetUpToDate",
                    "All applications have been generated successfully",
                ),
            ]
        old = {c["type"]: c for c in (appset.get("status") or {}).get("conditions") or []}
        for c in conditions:
            previous = old.get(c["type"])
            if previous and (previous.get("status"), previous.get("message")) == (
                c["status"],
                c["message"],
            ):
                c["lastTransitionTime"] = previous.get(
                    "lastTransitionTime", c["lastTransitionTime"]
                )
        resources = [
            {
                "group": "argoproj.io",
                "version": "v1alpha1",
                "kind": "Application",
                "name": app["metadata"]["name"],
                "namespace": app["metadata"]["namespace"],
                "status": ((app.get("status") or {}).get("sync") or {}).get("status", "Unknown"),
                "health": {
                    "status": ((app.get("status") or {}).get("health") or {}).get(
                        "status", "Unknown"
                    )
                },
            }
            for app in apps
        ]
        health = "Degraded" if errors else "Healthy"
        status = {
            "conditions": conditions,
            "resources": resources,
            "resourcesCount": len(resources),
            "health": {"status": health},
        }
        if (appset.get("status") or {}) != status:
            self._patch_appset(appset["metadata"]["name"], {"status": status}, subresource="status")


def merge_templates(base: Obj, override: Obj) -> Obj:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_templates(result[key], value)
        elif value not in (None, "", [], {}):
            result[key] = copy.deepcopy(value)
    return result


def passes_filter(rule: Obj, pr: Obj) -> bool:
    checks = (
        ("branchMatch", pr["head"]["ref"]),
        ("targetBranchMatch", pr["base"]["ref"]),
        ("titleMatch", pr["title"]),
    )
    return all(re.search(rule[key], value) for key, value in checks if rule.get(key))


def find_cluster_secret(cluster: Cluster, namespace: str, server: str) -> Obj | None:
    """Argo CD's cluster for a server URL (like Argo CD's cluster cache: built once per change
    of the Secrets, not per Application, which matters at thousands of apps)."""
    with cluster.lock:
        version = (namespace, cluster.kind_rv.get(SECRETS, 0))
        cached = cluster.caches.get("cluster-servers")
        if cached is None or cached[0] != version:
            index: dict[str, Obj] = {}
            for secret in cluster.peek_all(SECRETS, namespace, f"{SECRET_TYPE_LABEL}=cluster"):
                raw = (secret.get("data") or {}).get("server")
                if raw:
                    index.setdefault(base64.b64decode(raw).decode().rstrip("/"), secret)
            cached = cluster.caches["cluster-servers"] = (version, index)
        return cached[1].get(server.rstrip("/"))


def helm_parameters(app: Obj) -> dict[str, str]:
    helm = ((app.get("spec") or {}).get("source") or {}).get("helm") or {}
    return {p.get("name", ""): str(p.get("value", "")) for p in helm.get("parameters") or []}


def helm_values(app: Obj) -> Obj:
    helm = ((app.get("spec") or {}).get("source") or {}).get("helm") or {}
    values: Obj = {}
    if helm.get("values"):
        try:
            loaded = yaml.safe_load(helm["values"])
            values = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            values = {}
    if isinstance(helm.get("valuesObject"), dict):
        values = merge_templates(values, helm["valuesObject"])
    return values


def image_of(app: Obj) -> str:
    return f"ghcr.io/sandbox/sampleapp:{helm_parameters(app).get('image.tag', 'latest')}"


def is_vcluster_app(app: Obj) -> bool:
    source = (app.get("spec") or {}).get("source") or {}
    return source.get("chart") == "vcluster" or source.get("path", "").rstrip("/").endswith(
        "vcluster"
    )


@dataclass
class AppFate:
    """What the simulated world does to an Application: its fault and timing."""

    fault: str = ""  # "", "degraded", "sync-failed"


@dataclass
class ApplicationController:
    cluster: Cluster
    namespace: str = "argocd"
    sync_seconds: float = 3.0
    health_seconds: float = 4.0
    clock: Callable[[], float] = time.monotonic
    fates: dict[str, AppFate] = field(default_factory=dict)
    started: dict[tuple[str, str], float] = field(default_factory=dict)  # (uid, revision) → t
    settled: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # uid → unchanged inputs

    def set_fault(self, app_name: str, fault: str) -> None:
        self.fates[app_name] = AppFate(fault)

    def tick(self) -> None:
        for app in self.cluster.peek_all(APPLICATIONS, self.namespace):
            uid = app["metadata"]["uid"]
            try:
                if app["metadata"].get("deletionTimestamp"):
                    self._finalize(app)
                    continue
                # Like the real controller's informers: an app whose inputs have not changed
                # since a reconcile that changed nothing (and had no timer left) is not redone.
                inputs = self._inputs(app)
                if self.settled.get(uid) == inputs:
                    continue
                self.settled.pop(uid, None)
                if self._reconcile(app) and self._inputs(app) == inputs:
                    self.settled[uid] = inputs
            except ApiError as exc:
                log.debug("application %s: %s", app["metadata"]["name"], exc.message)

    def _inputs(self, app: Obj) -> tuple[Any, ...]:
        """What a reconcile of `app` reads: the app, its fate, its cluster, what it deployed."""
        destination = (app.get("spec") or {}).get("destination") or {}
        server = (destination.get("server") or "").rstrip("/")
        namespace = destination.get("namespace") or ""
        reads: list[Obj | None] = []
        if server != IN_CLUSTER:
            reads.append(find_cluster_secret(self.cluster, self.namespace, server))
        elif namespace:
            reads.append(self.cluster.peek(NAMESPACES, "", namespace))
            if not is_vcluster_app(app):
                reads += [
                    self.cluster.peek(DEPLOYMENTS, namespace, "sampleapp"),
                    self.cluster.peek(SERVICES, namespace, "sampleapp"),
                ]
        fate = self.fates.get(app["metadata"]["name"])
        return (
            app["metadata"]["resourceVersion"],
            fate.fault if fate else "",
            *((r or {}).get("metadata", {}).get("resourceVersion") for r in reads),
        )

    def _write(self, app: Obj, status: Obj, drop_refresh: bool = False) -> None:
        """Write status when it changed (stamping reconciledAt), or to acknowledge a refresh."""
        old = app.get("status") or {}
        # Transition times move only when the condition or health itself changes.
        previous = {(c.get("type"), c.get("message")): c for c in old.get("conditions") or []}
        for c in status.get("conditions") or []:
            kept = previous.get((c.get("type"), c.get("message")))
            if kept and kept.get("lastTransitionTime"):
                c["lastTransitionTime"] = kept["lastTransitionTime"]
        old_health, health = old.get("health") or {}, status.get("health")
        if health is not None:
            if health.get("status") == old_health.get("status") and old_health.get(
                "lastTransitionTime"
            ):
                health["lastTransitionTime"] = old_health["lastTransitionTime"]
            else:
                health["lastTransitionTime"] = now_rfc3339()
        before = {k: v for k, v in (app.get("status") or {}).items() if k != "reconciledAt"}
        after = {k: v for k, v in status.items() if k != "reconciledAt"}
        if before == after and not drop_refresh:
            return
        status["reconciledAt"] = now_rfc3339()
        # A merge patch keeps keys it does not mention: null the ones that went away.
        body: Obj = {"status": {**dict.fromkeys(old), **status}}
        if drop_refresh:
            body["metadata"] = {"annotations": {APP_REFRESH: None}}
        self.cluster.patch(APPLICATIONS, self.namespace, app["metadata"]["name"], body)

    def _reconcile(self, app: Obj) -> bool:
        """Bring the app's status one step on; True when no timer of its own is left."""
        meta, spec = app["metadata"], app.get("spec") or {}
        status = copy.deepcopy(app.get("status") or {})
        refresh = APP_REFRESH in (meta.get("annotations") or {})
        destination = spec.get("destination") or {}
        server = (destination.get("server") or "").rstrip("/")
        target = (spec.get("source") or {}).get("targetRevision") or "HEAD"
        revision = (
            target
            if re.fullmatch(r"[0-9a-f]{40}", target)
            else fake_sha(f"{meta['name']}@{target}")
        )
        now = self.clock()
        if (
            server != IN_CLUSTER
            and find_cluster_secret(self.cluster, self.namespace, server) is None
        ):
            message = (
                f"application destination spec for {meta['name']} is invalid: unable to find "
                f"destination server: there are no clusters with this URL: {server}"
            )
            previous = {c.get("type"): c for c in status.get("conditions") or []}.get(
                "InvalidSpecError"
            )
            status.update(
                sync={
                    "status": "Unknown",
                    "comparedTo": {"source": spec.get("source"), "destination": destination},
                },
                health={"status": "Unknown"},
                conditions=[
                    previous
                    if previous and previous.get("message") == message
                    else {
                        "type": "InvalidSpecError",
                        "message": message,
                        "lastTransitionTime": now_rfc3339(),
                    }
                ],
            )
            status.pop("operationState", None)
            self._write(app, status, refresh)
            return True
        fate = self.fates.get(meta["name"], AppFate())
        history = status.get("history") or []
        if fate.fault == "manual-sync" and history and history[-1]["revision"] != revision:
            # Automated sync is off for this app: OutOfSync, still running the old one.
            status["sync"] = {
                "status": "OutOfSync",
                "revision": revision,
                "comparedTo": {"source": spec.get("source"), "destination": destination},
            }
            self._write(app, status, refresh)
            return True
        key = (meta["uid"], revision)
        if (
            refresh
            and fate.fault == "sync-failed"
            and (status.get("operationState") or {}).get("phase") == "Failed"
        ):
            self.started.pop(key, None)  # a hard refresh retries the failed sync
        started = self.started.setdefault(key, now)
        elapsed = now - started
        status.pop("conditions", None)
        status["sourceType"] = "Helm"
        compared = {"source": spec.get("source"), "destination": destination}
        operation_started = (
            status.get("operationState", {}).get("startedAt")
            if status.get("sync", {}).get("revision") == revision
            else None
        )
        if elapsed < self.sync_seconds / 2:
            status["sync"] = {"status": "OutOfSync", "comparedTo": compared, "revision": revision}
            status["health"] = (
                {"status": "Missing"}
                if "health" not in status or status["health"].get("status") == "Missing"
                else status["health"]
            )
        elif elapsed < self.sync_seconds:
            status["sync"] = {"status": "OutOfSync", "comparedTo": compared, "revision": revision}
            status["operationState"] = {
                "operation": {"sync": {"revision": revision}, "initiatedBy": {"automated": True}},
                "phase": "Running",
                "message": "waiting for healthy state of apps/Deployment"
                if not is_vcluster_app(app)
                else "waiting for healthy state of apps/StatefulSet",
                "startedAt": operation_started or now_rfc3339(),
            }
        elif fate.fault == "sync-failed":
            status["sync"] = {"status": "OutOfSync", "comparedTo": compared, "revision": revision}
            status["health"] = {"status": "Missing"}
            status["operationState"] = {
                "operation": {"sync": {"revision": revision}, "initiatedBy": {"automated": True}},
                "phase": "Failed",
                "message": (
                    "one or more objects failed to apply, reason: Deployment.apps "
                    '"sampleapp" is invalid: spec.template.spec.containers[0].image: '
                    "Required value"
                ),
                "startedAt": (status.get("operationState") or {}).get("startedAt") or now_rfc3339(),
                "finishedAt": (status.get("operationState") or {}).get("finishedAt")
                or now_rfc3339(),
                "retryCount": 5,
            }
            status["conditions"] = [
                {
                    "type": "SyncError",
                    "message": "Failed sync attempt to "
                    + revision
                    + ": one or more objects failed to apply (retried 5 times).",
                    "lastTransitionTime": now_rfc3339(),
                }
            ]
        else:
            resources = self._deploy(app, revision)
            healthy = elapsed >= self.sync_seconds + self.health_seconds
            health = "Healthy" if healthy else "Progressing"
            if fate.fault == "degraded" and healthy:
                health = "Degraded"
            elif fate.fault == "progressing":
                health = "Progressing"
            previous = status.get("operationState") or {}
            status["sync"] = {"status": "Synced", "comparedTo": compared, "revision": revision}
            status["health"] = {"status": health}
            if health == "Degraded":
                workload = (
                    f'StatefulSet "{meta["name"]}"'
                    if is_vcluster_app(app)
                    else 'Deployment "sampleapp"'
                )
                status["health"]["message"] = f"{workload} exceeded its progress deadline"
            status["resources"] = [
                {
                    **r,
                    "status": "Synced",
                    "health": {
                        "status": health
                        if r["kind"] in ("Deployment", "StatefulSet")
                        else "Healthy"
                    },
                }
                for r in resources
            ]
            status["operationState"] = {
                "operation": {"sync": {"revision": revision}, "initiatedBy": {"automated": True}},
                "phase": "Succeeded",
                "message": "successfully synced (all tasks run)",
                "startedAt": previous.get("startedAt") or now_rfc3339(),
                "finishedAt": previous.get("finishedAt")
                if previous.get("phase") == "Succeeded"
                else now_rfc3339(),
                "syncResult": {"revision": revision, "source": spec.get("source")},
            }
            if not history or history[-1]["revision"] != revision:
                history = [
                    *history,
                    {
                        "id": (history[-1]["id"] + 1) if history else 0,
                        "revision": revision,
                        "deployedAt": now_rfc3339(),
                        "deployStartedAt": status["operationState"]["startedAt"],
                        "source": spec.get("source"),
                    },
                ][-10:]
            status["history"] = history
            status["summary"] = {}
            if not is_vcluster_app(app):
                status["summary"] = {
                    "externalURLs": [f"https://{meta['name']}.preview.sandbox.test"],
                    "images": [image_of(app)],
                }
        self._write(app, status, refresh)
        return elapsed >= self.sync_seconds + self.health_seconds or (
            fate.fault == "sync-failed" and elapsed >= self.sync_seconds
        )

    def _deploy(self, app: Obj, revision: str) -> list[Obj]:
        """Create what the chart renders in the destination (host cluster only)."""
        spec = app.get("spec") or {}
        destination = spec.get("destination") or {}
        namespace = destination.get("namespace") or ""
        in_cluster = (destination.get("server") or "").rstrip("/") == IN_CLUSTER
        release = app["metadata"]["name"]
        if is_vcluster_app(app):
            resources = [
                {
                    "group": "apps",
                    "version": "v1",
                    "kind": "StatefulSet",
                    "namespace": namespace,
                    "name": release,
                },
                {"version": "v1", "kind": "Service", "namespace": namespace, "name": release},
            ]
        else:
            resources = [
                {
                    "group": "apps",
                    "version": "v1",
                    "kind": "Deployment",
                    "namespace": namespace,
                    "name": "sampleapp",
                },
                {"version": "v1", "kind": "Service", "namespace": namespace, "name": "sampleapp"},
            ]
        if not in_cluster or not namespace:
            return resources  # inside a vcluster: its own API, not emulated
        labels = {"app.kubernetes.io/instance": release, "argocd.argoproj.io/instance": release}
        ensure(self.cluster, NAMESPACES, "", {"metadata": {"name": namespace}})
        if is_vcluster_app(app):
            return resources  # the vcluster simulator creates its workload
        ensure(
            self.cluster,
            DEPLOYMENTS,
            namespace,
            {
                "metadata": {"name": "sampleapp", "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "sampleapp"}},
                    "template": {
                        "metadata": {"labels": {"app": "sampleapp"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "sampleapp",
                                    "image": image_of(app),
                                }
                            ]
                        },
                    },
                },
            },
        )
        ensure(
            self.cluster,
            SERVICES,
            namespace,
            {
                "metadata": {"name": "sampleapp", "labels": labels},
                "spec": {
                    "selector": {"app": "sampleapp"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            },
        )
        return resources

    def _finalize(self, app: Obj) -> None:
        finalizers = app["metadata"].get("finalizers") or []
        if not any(f.startswith(RESOURCES_FINALIZER) for f in finalizers):
            return
        destination = (app.get("spec") or {}).get("destination") or {}
        server = (destination.get("server") or "").rstrip("/")
        if (
            server != IN_CLUSTER
            and find_cluster_secret(self.cluster, self.namespace, server) is None
        ):
            status = copy.deepcopy(app.get("status") or {})
            status["conditions"] = [
                {
                    "type": "DeletionError",
                    "message": (
                        f"error getting cluster by server {server!r}: "
                        "there are no clusters with this URL"
                    ),
                    "lastTransitionTime": now_rfc3339(),
                }
            ]
            self._write(app, status)
            return
        namespace = destination.get("namespace") or ""
        if server == IN_CLUSTER and namespace:
            release = app["metadata"]["name"]
            # Cascade: delete what the app made, but leave a namespace it created (as Argo CD does).
            for kind, name in (
                (DEPLOYMENTS, "sampleapp"),
                (SERVICES, "sampleapp"),
                (STATEFULSETS, release),
                (SERVICES, release),
            ):
                with contextlib.suppress(ApiError):
                    self.cluster.delete(kind, namespace, name)
        remaining = [f for f in finalizers if not f.startswith(RESOURCES_FINALIZER)]
        self.cluster.patch(
            APPLICATIONS,
            self.namespace,
            app["metadata"]["name"],
            {"metadata": {"finalizers": remaining or None}},
        )


def ensure(cluster: Cluster, kind: Any, namespace: str, body: Obj) -> Obj:
    """The object, created from `body` when missing (read the answer, never change it)."""
    existing = cluster.peek(kind, namespace, body["metadata"]["name"])
    if existing is not None:
        return existing
    try:
        return cluster.create(kind, namespace, body)[0]
    except ApiError as exc:
        if exc.code != 409:
            raise
        return cluster.get(kind, namespace, body["metadata"]["name"])


@dataclass
class VClusterSimulator:
    """A vcluster Helm release: StatefulSet, Service, pod, then the kubeconfig Secret."""

    cluster: Cluster
    namespace: str = "argocd"
    ready_seconds: float = 3.0
    clock: Callable[[], float] = time.monotonic
    seen: dict[str, float] = field(default_factory=dict)
    settled: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def tick(self) -> None:
        for app in self.cluster.peek_all(APPLICATIONS, self.namespace):
            if not is_vcluster_app(app) or app["metadata"].get("deletionTimestamp"):
                continue
            status = app.get("status") or {}
            if (status.get("operationState") or {}).get("phase") != "Succeeded":
                continue
            destination = (app.get("spec") or {}).get("destination") or {}
            if (destination.get("server") or "").rstrip("/") != IN_CLUSTER:
                continue
            namespace = destination.get("namespace") or ""
            # A release that is up (kubeconfig written) is redone only when something of it changed.
            inputs = self._inputs(app, namespace)
            if self.settled.get(app["metadata"]["uid"]) == inputs:
                continue
            try:
                self._run(app, namespace)
            except ApiError as exc:
                log.debug("vcluster %s: %s", app["metadata"]["name"], exc.message)
                continue
            if inputs[-1] is not None and self._inputs(app, namespace) == inputs:
                self.settled[app["metadata"]["uid"]] = inputs

    def _inputs(self, app: Obj, namespace: str) -> tuple[Any, ...]:
        release = app["metadata"]["name"]
        reads = [
            self.cluster.peek(kind, namespace, name)
            for kind, name in (
                (STATEFULSETS, release),
                (SERVICES, release),
                (PODS, f"{release}-0"),
                (SECRETS, f"vc-{release}"),
            )
        ]
        return (
            app["metadata"]["resourceVersion"],
            *((r or {}).get("metadata", {}).get("resourceVersion") for r in reads),
        )

    def _run(self, app: Obj, namespace: str) -> None:
        release = app["metadata"]["name"]
        labels = {
            "app": "vcluster",
            "release": release,
            "chart": "vcluster-0.19.7",
            "heritage": "Helm",
        }
        sts = ensure(
            self.cluster,
            STATEFULSETS,
            namespace,
            {
                "metadata": {"name": release, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "serviceName": f"{release}-headless",
                    "selector": {"matchLabels": {"app": "vcluster", "release": release}},
                    "template": {
                        "metadata": {"labels": {"app": "vcluster", "release": release}},
                        "spec": {
                            "containers": [
                                {"name": "syncer", "image": "ghcr.io/loft-sh/vcluster:0.19.7"}
                            ]
                        },
                    },
                },
            },
        )
        ensure(
            self.cluster,
            SERVICES,
            namespace,
            {
                "metadata": {
                    "name": release,
                    "labels": {**labels, "vcluster.loft.sh/service": "true"},
                },
                "spec": {
                    "type": "ClusterIP",
                    "selector": {"app": "vcluster", "release": release},
                    "ports": [
                        {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
                    ],
                },
            },
        )
        first_seen = self.seen.setdefault(sts["metadata"]["uid"], self.clock())
        if self.clock() - first_seen < self.ready_seconds:
            return
        owner = [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": release,
                "uid": sts["metadata"]["uid"],
            }
        ]
        ensure(
            self.cluster,
            PODS,
            namespace,
            {
                "metadata": {
                    "name": f"{release}-0",
                    "labels": {"app": "vcluster", "release": release},
                    "ownerReferences": owner,
                },
                "spec": {
                    "containers": [{"name": "syncer", "image": "ghcr.io/loft-sh/vcluster:0.19.7"}]
                },
            },
        )
        if (sts.get("status") or {}).get("readyReplicas") != 1:
            self.cluster.patch(
                STATEFULSETS,
                namespace,
                release,
                {
                    "status": {
                        "replicas": 1,
                        "readyReplicas": 1,
                        "availableReplicas": 1,
                        "currentReplicas": 1,
                        "updatedReplicas": 1,
                        "observedGeneration": sts["metadata"].get("generation", 1),
                    }
                },
                subresource="status",
            )
        if self.cluster.peek(SECRETS, namespace, f"vc-{release}") is None:
            self.cluster.create(
                SECRETS, namespace, kubeconfig_secret(app, release, namespace, owner)
            )


def vcluster_server(app: Obj, release: str, namespace: str) -> tuple[str, list[str]]:
    """The kubeconfig server and extra SANs, from 0.x syncer flags or 0.20+ values."""
    server, sans = "https://localhost:8443", [release, f"{release}.{namespace}"]
    for name, value in helm_parameters(app).items():
        if name.startswith("syncer.extraArgs"):
            if value.startswith("--out-kube-config-server="):
                server = value.split("=", 1)[1]
            elif value.startswith("--tls-san="):
                sans.append(value.split("=", 1)[1])
        elif name == "exportKubeConfig.server":
            server = value
        elif name.startswith("controlPlane.proxy.extraSANs"):
            sans.append(value)
    values = helm_values(app)
    export = values.get("exportKubeConfig") or {}
    if export.get("server"):
        server = export["server"]
    sans += ((values.get("controlPlane") or {}).get("proxy") or {}).get("extraSANs") or []
    return server, sans


def kubeconfig_secret(app: Obj, release: str, namespace: str, owner: list[Obj]) -> Obj:
    """`vc-<release>` as vcluster writes it; the 0.x chart (the seed's) puts no labels on it."""
    server, sans = vcluster_server(app, release, namespace)
    values = helm_values(app)
    modern = (
        "exportKubeConfig" in values
        or "controlPlane" in values
        or any(
            name.startswith(("exportKubeConfig.", "controlPlane.")) for name in helm_parameters(app)
        )
    )
    creds = pki.issue(release, sans)
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        # vcluster's default context/cluster name is not unique per vcluster.
        "clusters": [
            {
                "name": "my-vcluster",
                "cluster": {"server": server, "certificate-authority-data": b64(creds.ca_pem)},
            }
        ],
        "users": [
            {
                "name": "my-vcluster",
                "user": {
                    "client-certificate-data": b64(creds.client_cert_pem),
                    "client-key-data": b64(creds.client_key_pem),
                },
            }
        ],
        "contexts": [
            {"name": "my-vcluster", "context": {"cluster": "my-vcluster", "user": "my-vcluster"}}
        ],
        "current-context": "my-vcluster",
        "preferences": {},
    }
    metadata: Obj = {"name": f"vc-{release}", "ownerReferences": owner}
    if modern:
        metadata["labels"] = {"app": "vcluster", "vcluster-name": release}  # v0.24.0+
    return {
        "metadata": metadata,
        "type": "Opaque",
        "data": {
            "config": b64(yaml.safe_dump(config, sort_keys=False)),
            "certificate-authority": b64(creds.ca_pem),
            "client-certificate": b64(creds.client_cert_pem),
            "client-key": b64(creds.client_key_pem),
        },
    }
