"""Health: roll Argo CD status and the cluster's own objects into one state a tester understands."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from environments.discovery import Expected

Obj = dict[str, Any]
SHA = re.compile(r"^[0-9a-f]{40}$")
HEALTH_ORDER = ["Degraded", "Missing", "Unknown", "Progressing", "Suspended", "Healthy"]
SYNC_ORDER = ["OutOfSync", "Unknown", "Synced"]


MAX_RESOURCES = 50  # per Application, on the environment page


@dataclass
class AppView:
    """One expected Application as the cluster shows it (or does not)."""

    name: str
    applicationset: str
    role: str
    exists: bool
    sync: str = ""
    health: str = ""
    health_message: str = ""
    operation_phase: str = ""
    operation_message: str = ""
    conditions: list[Obj] = field(default_factory=list)
    revision: str = ""  # what is deployed
    target_revision: str = ""  # what Argo CD compares against
    destination_server: str = ""
    destination_namespace: str = ""
    external_urls: list[str] = field(default_factory=list)
    deleting: bool = False
    resources: list[Obj] = field(default_factory=list)


@dataclass
class World:
    """The cluster facts health needs, from one snapshot."""

    namespaces: set[str]
    statefulsets: dict[tuple[str, str], Obj]
    secrets: set[tuple[str, str]]
    cluster_servers: set[str]
    appset_errors: dict[str, str]


@dataclass
class Assessment:
    state: str
    reason: str
    health: str = ""
    sync: str = ""
    deployed_sha: str = ""
    url: str = ""
    namespace: str = ""
    namespace_exists: bool = False
    vcluster_ready: bool = False
    apps: list[AppView] = field(default_factory=list)


def deployed_revision(app: Obj) -> str:
    """What runs: the last sync in history, else a succeeded operation, else a synced status."""
    status = app.get("status") or {}
    history = status.get("history") or []
    if history:
        return str(history[-1].get("revision") or "")
    operation = status.get("operationState") or {}
    if operation.get("phase") == "Succeeded":
        return str((operation.get("syncResult") or {}).get("revision") or "")
    sync = status.get("sync") or {}
    return str(sync.get("revision") or "") if sync.get("status") == "Synced" else ""


def view(expected: Expected, app: Obj | None) -> AppView:
    source = expected.source
    if app is None:
        return AppView(
            expected.name,
            source.applicationset,
            source.role,
            exists=False,
            destination_server=expected.server,
            destination_namespace=expected.namespace,
        )
    status = app.get("status") or {}
    operation = status.get("operationState") or {}
    destination = (app.get("spec") or {}).get("destination") or {}
    return AppView(
        name=expected.name,
        applicationset=source.applicationset,
        role=source.role,
        exists=True,
        sync=str((status.get("sync") or {}).get("status") or ""),
        health=str((status.get("health") or {}).get("status") or ""),
        health_message=str((status.get("health") or {}).get("message") or ""),
        operation_phase=str(operation.get("phase") or ""),
        operation_message=str(operation.get("message") or ""),
        conditions=[
            {"type": str(c.get("type", "")), "message": str(c.get("message", ""))}
            for c in status.get("conditions") or []
        ],
        revision=deployed_revision(app),
        target_revision=str((status.get("sync") or {}).get("revision") or ""),
        destination_server=str(destination.get("server") or "").rstrip("/"),
        destination_namespace=str(destination.get("namespace") or ""),
        external_urls=[str(u) for u in (status.get("summary") or {}).get("externalURLs") or []],
        deleting=bool(app.get("metadata", {}).get("deletionTimestamp")),
        resources=[
            {
                "kind": str(r.get("kind", "")),
                "namespace": str(r.get("namespace", "")),
                "name": str(r.get("name", "")),
                "status": str(r.get("status", "")),
                "health": str((r.get("health") or {}).get("status", "")),
            }
            for r in (status.get("resources") or [])[:MAX_RESOURCES]
            if isinstance(r, dict)
        ],
    )


def short(sha: str) -> str:
    return sha[:7]


def _worst(values: list[str], order: list[str]) -> str:
    known = [v for v in values if v in order]
    return min(known, key=order.index) if known else ""


def _problem(app: AppView) -> str | None:
    """Why an app is broken (not merely busy), in a tester's words; None when it is not."""
    if app.operation_phase in ("Failed", "Error"):
        return f"`{app.name}` failed to sync: {app.operation_message or app.operation_phase}"
    if app.health == "Degraded":
        return f"`{app.name}` is degraded" + (
            f": {app.health_message}" if app.health_message else ""
        )
    errors = [c for c in app.conditions if c["type"].endswith("Error")]
    if errors:
        return f"`{app.name}`: {errors[0]['message']}"
    return None


def assess(
    open_and_selected: bool,
    head_sha: str,
    flavor: str,
    expected: list[Expected],
    apps: dict[str, Obj],
    world: World,
) -> Assessment:
    """The state and reason of one environment (one PR, one flavour)."""
    views = [view(e, apps.get(e.name)) for e in expected if e.name]
    existing = [v for v in views if v.exists]
    result = Assessment("pending", "", apps=views)
    app_views = [v for v in existing if v.role == "app"]
    cluster_views = [v for v in existing if v.role == "cluster"]
    result.health = _worst([v.health for v in existing], HEALTH_ORDER)
    result.sync = _worst([v.sync for v in existing], SYNC_ORDER)
    revisions = [v.revision for v in app_views if SHA.match(v.revision)]
    result.deployed_sha = revisions[0] if revisions else ""
    result.url = next((u for v in app_views for u in v.external_urls), "")
    host_views = cluster_views if flavor == "vcluster" else app_views
    result.namespace = next(
        (v.destination_namespace for v in host_views), next((e.namespace for e in expected), "")
    )

    result.namespace_exists = bool(result.namespace) and result.namespace in world.namespaces
    result.vcluster_ready = any(
        ((world.statefulsets.get((v.destination_namespace, v.name)) or {}).get("status") or {}).get(
            "readyReplicas"
        )
        for v in cluster_views
    )

    def done(state: str, reason: str) -> Assessment:
        result.state, result.reason = state, reason
        return result

    if not open_and_selected:
        if existing:
            blocked = sorted(
                {e.source.applicationset for e in expected}
                & {name for name, message in world.appset_errors.items() if message}
            )
            if blocked:
                # Argo CD ends a reconcile that failed to create or update an Application
                # before it deletes any: another PR's error keeps these alive.
                return done(
                    "destroying",
                    f"Argo CD cannot remove its {len(existing)} application(s) while "
                    f"ApplicationSet {', '.join(f'`{b}`' for b in blocked)} has an error "
                    f"(another PR's): {world.appset_errors[blocked[0]][:300]}",
                )
            return done("destroying", f"Argo CD is removing {len(existing)} application(s)")
        return done("destroyed", "the pull request is closed or no longer selected")
    problems = [p for e in expected for p in e.problems]
    if problems:
        return done("invalid", problems[0])
    for e in expected:
        message = world.appset_errors.get(e.source.applicationset, "")
        if e.name and f'"{e.name}"' in message:
            return done("invalid", f"Argo CD cannot create `{e.name}`: {message}")
    if not existing:
        sources = sorted({e.source.applicationset for e in expected})
        every = min((e.source.requeue_seconds for e in expected), default=0)
        return done(
            "pending",
            f"waiting for Argo CD to create the applications (ApplicationSet "
            f"{', '.join(f'`{s}`' for s in sources)} lists PRs every {every} s; refresh requested)",
        )
    for v in cluster_views:
        problem = _problem(v)
        if problem:
            return done("degraded", f"virtual cluster: {problem}")
    for v in cluster_views:
        if v.sync != "Synced" or v.health != "Healthy":
            return done(
                "provisioning",
                f"waiting for the virtual cluster (`{v.name}`: "
                f"{v.sync or 'Unknown'}, {v.health or 'Unknown'})",
            )
        ready = (world.statefulsets.get((v.destination_namespace, v.name)) or {}).get(
            "status"
        ) or {}
        if not ready.get("readyReplicas"):
            return done(
                "provisioning",
                f"waiting for the virtual cluster: control plane `{v.name}` is not ready",
            )
        if (v.destination_namespace, f"vc-{v.name}") not in world.secrets:
            return done(
                "provisioning", f"waiting for the virtual cluster's kubeconfig secret `vc-{v.name}`"
            )
    for v in views:
        if not v.exists:
            return done("provisioning", f"waiting for Argo CD to create `{v.name}`")
    if flavor == "vcluster":
        for v in app_views:
            if v.destination_server and v.destination_server not in world.cluster_servers:
                return done(
                    "provisioning",
                    f"waiting for the Argo CD cluster secret for {v.destination_server}",
                )
    for v in app_views:
        problem = _problem(v)
        if problem:
            return done("degraded", problem)
    if result.deployed_sha and SHA.match(head_sha) and result.deployed_sha != head_sha:
        return done(
            "out-of-date", f"deployed {short(result.deployed_sha)}, PR head is {short(head_sha)}"
        )
    for v in app_views:
        if v.operation_phase in ("Running", "Terminating"):
            return done(
                "provisioning",
                f"syncing `{v.name}`" + (f": {v.operation_message}" if v.operation_message else ""),
            )
        if v.sync != "Synced":
            return done("provisioning", f"`{v.name}` is {v.sync or 'not synced yet'}")
        if v.health != "Healthy":
            return done("provisioning", f"`{v.name}` is {v.health or 'starting'}")
    if not result.deployed_sha:
        return done("ready", "healthy and synced")
    return done("ready", f"healthy and synced on {short(result.deployed_sha)}")
