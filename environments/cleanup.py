"""What Argo CD leaves behind, and what belongs to nobody.

Argo CD removes an environment's Applications (and, with the resources finalizer, what they
deployed) but never a namespace that `CreateNamespace` made, nor the vcluster kubeconfig
Secret inside it. `clean_leftovers` deletes the namespace of an environment that is gone
(destroyed, expired, or its PR closed), once no Application targets it and no live
environment uses it. `sweep` lists what is still there without an owner, for the admin.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime

from environments import kube_gateway, secret_sync
from environments.errors import GatewayError
from environments.models import Environment, Event, Orphan

log = logging.getLogger(__name__)
DEAD = [Environment.State.DESTROYED, Environment.State.EXPIRED]
PROTECTED = {"default", "kube-system", "kube-public", "kube-node-lease"}
HOST = ("", "https://kubernetes.default.svc")
CLOCK_SKEW = timedelta(minutes=10)


def _targeted(snapshot: kube_gateway.ClusterSnapshot) -> set[str]:
    """Host namespaces some Application deploys into."""
    targeted = set()
    for app in snapshot.applications:
        destination = (app.get("spec") or {}).get("destination") or {}
        if str(destination.get("server") or "").rstrip("/") in HOST:
            targeted.add(str(destination.get("namespace") or ""))
    return targeted


def _in_use() -> set[str]:
    return set(
        Environment.objects.exclude(state__in=DEAD)
        .filter(pull_request__state="open")
        .exclude(namespace="")
        .values_list("namespace", flat=True)
    )


def candidates() -> QuerySet[Environment]:
    """Environments that are gone but whose namespace was last seen in the cluster, and that
    had Applications once (a name only predicted from a template is nobody's proof)."""
    return (
        Environment.objects.filter(state__in=DEAD, namespace_exists=True)
        .exclude(namespace="")
        .exclude(last_seen_at=None)
        .select_related("pull_request__repository")
    )


def _owned(env: Environment, meta: dict[str, str], others: set[str]) -> str:
    """Why this environment may not delete its namespace, or "" when it may: one of its own
    Applications deployed there, no other environment names it, and it was created after
    envportal first saw the environment (so not a namespace that was there before the PR)."""
    if env.namespace in others:
        return "another environment uses it"
    if not env.apps.filter(destination_namespace=env.namespace).exists():
        return "none of its Applications deployed there"
    created = parse_datetime(meta.get("created", "") or "")
    if created is None or created < env.created_at - CLOCK_SKEW:
        return "it existed before the environment"
    return ""


def clean_leftovers(snapshot: kube_gateway.ClusterSnapshot | None = None) -> dict[str, int]:
    """Delete the namespaces gone environments leave behind. Safe to run twice."""
    envs = list(candidates())
    if not envs:
        return {"deleted": 0, "kept": 0}
    snapshot = snapshot or kube_gateway.snapshot(settings.ARGOCD_NAMESPACE)
    targeted = _targeted(snapshot)
    # Namespaces of every environment not gone (any PR state): a dead one never shares them.
    live = set(
        Environment.objects.exclude(state__in=DEAD)
        .exclude(namespace="")
        .values_list("namespace", flat=True)
    )
    counts = {"deleted": 0, "kept": 0}
    for env in envs:
        name = env.namespace
        if name not in snapshot.namespaces:
            Environment.objects.filter(pk=env.pk).update(namespace_exists=False)
            continue
        if name in PROTECTED or name == settings.ARGOCD_NAMESPACE or name in targeted:
            counts["kept"] += 1  # an Application still deploys there: not ours to remove yet
            continue
        meta = snapshot.namespace_meta.get(name, {})
        refusal = _owned(env, meta, live)
        if refusal:
            Environment.objects.filter(pk=env.pk).update(namespace_exists=False)
            log.info("keeping namespace %s of %s: %s", name, env, refusal)
            continue  # the orphan sweep shows it to a person
        if not Environment.objects.filter(pk=env.pk, state__in=DEAD).exists():
            continue  # recreated meanwhile
        try:
            kube_gateway.delete_namespace(name, meta.get("uid", ""))
        except GatewayError as exc:
            log.warning("could not delete namespace %s: %s", name, exc)
            counts["kept"] += 1
            continue
        with transaction.atomic():
            Environment.objects.filter(pk=env.pk).update(namespace_exists=False)
            Event.objects.create(
                environment=env,
                pull_request=env.pull_request,
                kind="cleaned-up",
                message=f"deleted namespace `{name}`, which Argo CD leaves behind",
            )
        counts["deleted"] += 1
    return counts


def sweep(snapshot: kube_gateway.ClusterSnapshot | None = None) -> list[Orphan]:
    """Find namespaces, vcluster kubeconfig Secrets and managed cluster secrets that belong
    to no open PR's live environment; store them as the admin's report (replacing the last)."""
    snapshot = snapshot or kube_gateway.snapshot(settings.ARGOCD_NAMESPACE)
    targeted, in_use = _targeted(snapshot), _in_use()
    known = dict(
        Environment.objects.exclude(namespace="").values_list("namespace", "pull_request__state")
    )
    found: list[Orphan] = []
    for name in sorted(snapshot.namespaces):
        if name in known and name not in in_use and name not in PROTECTED:
            removable = name not in targeted
            found.append(
                Orphan(
                    kind=Orphan.Kind.NAMESPACE,
                    name=name,
                    uid=snapshot.namespace_meta.get(name, {}).get("uid", ""),
                    reason="its environment is gone"
                    + ("" if removable else "; an Application still deploys into it"),
                    removable=removable,
                )
            )
    for (namespace, name), secret in sorted(snapshot.secrets.items()):
        if name.startswith("vc-") and namespace in known and namespace not in in_use:
            found.append(
                Orphan(
                    kind=Orphan.Kind.VCLUSTER_SECRET,
                    namespace=namespace,
                    name=name,
                    uid=secret["metadata"].get("uid", ""),
                    reason="kubeconfig of a vcluster whose environment is gone",
                    removable=namespace not in targeted,
                )
            )
    servers = {
        str(((a.get("spec") or {}).get("destination") or {}).get("server") or "").rstrip("/")
        for a in snapshot.applications
    }
    live = set(
        Environment.objects.exclude(state__in=DEAD)
        .filter(pull_request__state="open", flavor="vcluster")
        .values_list("cluster_secret__secret_name", flat=True)
    )
    for (namespace, name), secret in sorted(snapshot.secrets.items()):
        labels = secret["metadata"].get("labels") or {}
        if namespace != settings.ARGOCD_NAMESPACE or labels.get(secret_sync.MANAGED_BY) != (
            secret_sync.MANAGER
        ):
            continue
        if name in live:
            continue
        targeted_server = secret_sync._server_of(secret) in servers
        found.append(
            Orphan(
                kind=Orphan.Kind.CLUSTER_SECRET,
                namespace=namespace,
                name=name,
                uid=secret["metadata"].get("uid", ""),
                reason="managed cluster secret of no live environment"
                + (
                    "; Applications still target it (deleting it now would leak)"
                    if targeted_server
                    else ""
                ),
                removable=not targeted_server,
            )
        )
    with transaction.atomic():
        Orphan.objects.all().delete()
        Orphan.objects.bulk_create(found)
    return found


def remove(orphan: Orphan) -> str:
    """Delete one orphan from the cluster (the admin's clean-up); return what happened."""
    if not orphan.removable:
        return f"kept {orphan}: {orphan.reason}"
    if orphan.kind == Orphan.Kind.NAMESPACE:
        kube_gateway.delete_namespace(orphan.name, orphan.uid)
    else:
        kube_gateway.delete_secret(orphan.namespace, orphan.name, orphan.uid)
    Event.objects.create(kind="cleaned-up", message=f"deleted orphan {orphan}")
    orphan.delete()
    return f"deleted {orphan}"
