"""Secret synchronization: each vcluster's kubeconfig Secret → an Argo CD cluster secret.

What the reference setup's operator did, done properly: a unique cluster name per environment,
the kubeconfig's real server (never localhost), TLS verified (never `insecure: true`), the
bearer token as plain text, updates when the source changes (by fingerprint), clean-up only
after the Applications that target the cluster are gone, and only ever touching secrets
envportal manages. Key material passes through memory only: it is never logged, stored in the
database or shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from environments import kube_gateway
from environments.errors import Conflict, GatewayError, NotFound, Transient
from environments.models import ClusterSecret, Environment, EnvironmentApp, Event

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SECRET_TYPE = "argocd.argoproj.io/secret-type"  # noqa: S105 - a label name
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "envportal"
ANNOTATION_SOURCE = "envportal.io/source"
ANNOTATION_FINGERPRINT = "envportal.io/fingerprint"
ANNOTATION_REPOSITORY = "envportal.io/repository"
ANNOTATION_SOURCE_VERSION = "envportal.io/source-version"
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
LABEL_PR = "envportal.io/pull-request"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}  # noqa: S104 - hosts to refuse


class SourceError(Exception):
    """The vcluster's kubeconfig cannot make a working cluster secret (shown on the env)."""


@dataclass(frozen=True)
class Credentials:
    server: str
    ca: bytes
    cert: bytes = b""
    key: bytes = b""
    token: str = ""

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.server.encode(), self.ca, self.cert, self.key, self.token.encode()):
            digest.update(len(part).to_bytes(4, "big") + part)
        return digest.hexdigest()

    def config(self) -> str:
        """Argo CD's `config`: caData/certData/keyData are base64 of PEM; the token is plain."""
        tls: Obj = {"insecure": False}
        if self.ca:
            tls["caData"] = base64.b64encode(self.ca).decode()
        if self.token:
            return json.dumps({"bearerToken": self.token, "tlsClientConfig": tls})
        tls["certData"] = base64.b64encode(self.cert).decode()
        tls["keyData"] = base64.b64encode(self.key).decode()
        return json.dumps({"tlsClientConfig": tls})


def _b64(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value or ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SourceError("a field of the kubeconfig is not valid base64") from exc


def source_version(secret: Obj) -> str:
    """The source Secret's identity and version: unchanged means the same key material
    (the API server bumps resourceVersion on every write), so no need to parse it again."""
    meta = secret.get("metadata") or {}
    return f"{meta.get('uid', '')}/{meta.get('resourceVersion', '')}"


def read_credentials(secret: Obj) -> Credentials:
    """Credentials from `vc-<release>`: the kubeconfig in `config`, else the separate PEM keys."""
    data = secret.get("data") or {}
    if not data.get("config"):
        raise SourceError("the vcluster secret has no `config` (kubeconfig)")
    try:
        kubeconfig = yaml.load(_b64(data["config"]).decode(), Loader=SafeLoader)  # noqa: S506
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SourceError("the vcluster kubeconfig is not valid YAML") from exc
    if not isinstance(kubeconfig, dict):
        raise SourceError("the vcluster kubeconfig is not a kubeconfig")

    def named(kind: str, name: str) -> Obj:
        for entry in kubeconfig.get(f"{kind}s") or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry.get(kind) or {}
        raise SourceError(f"the vcluster kubeconfig has no {kind} `{name}`")

    try:
        context = named("context", kubeconfig.get("current-context") or "")
        cluster = named("cluster", context.get("cluster") or "")
        user = named("user", context.get("user") or "")
    except AttributeError as exc:
        raise SourceError("the vcluster kubeconfig is malformed") from exc
    server = str(cluster.get("server") or "").rstrip("/")
    host = (urlsplit(server).hostname or "").lower()
    if not server or not host:
        raise SourceError("the vcluster kubeconfig has no server")
    if host in LOCAL_HOSTS:
        raise SourceError(
            f"the vcluster kubeconfig points at {server}, which Argo CD cannot reach: set the "
            "syncer flag --out-kube-config-server (vcluster 0.x) or exportKubeConfig.server "
            "(0.20+) to the vcluster's in-cluster URL"
        )
    ca = (
        _b64(cluster["certificate-authority-data"])
        if cluster.get("certificate-authority-data")
        else _b64(data.get("certificate-authority"))
    )
    token = str(user.get("token") or "") or _b64(data.get("token")).decode(errors="replace")
    if token:
        return Credentials(server=server, ca=ca, token=token)
    cert = _b64(user.get("client-certificate-data") or data.get("client-certificate"))
    key = _b64(user.get("client-key-data") or data.get("client-key"))
    if not cert or not key:
        raise SourceError(
            "the vcluster kubeconfig has neither a token nor a client certificate and key"
        )
    return Credentials(server=server, ca=ca, cert=cert, key=key)


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


def target_name(env: Environment) -> str:
    repo = env.pull_request.repository
    return f"envportal-{_slug(repo.owner, 60)}-{_slug(repo.name, 100)}-pr-{env.pull_request.number}"


def cluster_name(env: Environment) -> str:
    """Argo CD's cluster name: unique per environment (the kubeconfig's is the same for all)."""
    repo = env.pull_request.repository
    return f"pr-{env.pull_request.number}-{repo.owner}-{repo.name}".lower()


def target_body(env: Environment, source: str, creds: Credentials, fingerprint: str) -> Obj:
    repo = env.pull_request.repository
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": target_name(env),
            "labels": {
                SECRET_TYPE: "cluster",
                MANAGED_BY: MANAGER,
                LABEL_PR: str(env.pull_request.number),
            },
            "annotations": {
                ANNOTATION_SOURCE: source,
                ANNOTATION_FINGERPRINT: fingerprint,
                ANNOTATION_REPOSITORY: repo.full_name,
            },
        },
        "type": "Opaque",
        "data": {
            key: base64.b64encode(value.encode()).decode()
            for key, value in (
                ("name", cluster_name(env)),
                ("server", creds.server),
                ("config", creds.config()),
            )
        },
    }


def _server_of(secret: Obj) -> str:
    raw = (secret.get("data") or {}).get("server", "")
    try:
        return base64.b64decode(raw).decode(errors="replace").rstrip("/")
    except (binascii.Error, ValueError):
        return ""


def _is_managed(secret: Obj) -> bool:
    return (secret["metadata"].get("labels") or {}).get(MANAGED_BY) == MANAGER


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    errors: int = 0
    requests: int = 0

    def counts(self) -> dict[str, int]:
        return {
            k: getattr(self, k) for k in ("created", "updated", "deleted", "errors", "requests")
        }


@dataclass
class Write:
    """A cluster secret to create, update or adopt (already right: an interrupted run wrote
    it), then the apps to refresh (done in parallel)."""

    env: Environment
    record: ClusterSecret
    body: Obj
    verb: str  # "created", "updated" or "adopted"
    source_name: str
    server: str
    fingerprint: str
    apps: list[str]
    error: str = ""
    conflict: bool = False


EVENT_VERBS = {"created": "created", "updated": "updated", "adopted": "found in place"}


@dataclass
class Batch:
    """What one run writes: Kubernetes writes first (in parallel), then the rows in bulk."""

    writes: list[Write] = field(default_factory=list)
    records: dict[int, ClusterSecret] = field(default_factory=dict)  # environment id → row
    events: list[Event] = field(default_factory=list)


def sync_cluster_secrets(snapshot: kube_gateway.ClusterSnapshot | None = None) -> dict[str, int]:
    """Create, update and delete the cluster secrets of every vcluster environment."""
    namespace = settings.ARGOCD_NAMESPACE
    outcome = Outcome()
    applications: list[Obj] | None = None  # read only when a secret is written or removed
    if snapshot is None:
        try:
            snapshot = kube_gateway.ClusterSnapshot(
                applicationsets=[],
                applications=[],
                namespaces=set(),
                statefulsets=kube_gateway.list_vcluster_statefulsets(),
                secrets=kube_gateway.list_opaque_secrets(),
                requests=2,
            )
        except Transient:
            raise  # the task retries these with backoff
        except GatewayError as exc:
            log.warning("secret sync: cannot read the cluster: %s", exc)
            return {"error": 1, "requests": 0}
    else:
        applications = snapshot.applications
    outcome.requests = snapshot.requests
    cluster_secrets = [
        s
        for (ns, _), s in snapshot.secrets.items()
        if ns == namespace and (s["metadata"].get("labels") or {}).get(SECRET_TYPE) == "cluster"
    ]
    managed = {s["metadata"]["name"]: s for s in cluster_secrets if _is_managed(s)}
    unmanaged_servers = {
        _server_of(s): s["metadata"]["name"] for s in cluster_secrets if not _is_managed(s)
    }
    # Secrets of someone else's that already hold a name envportal would give its target.
    taken = {
        name for (ns, name), s in snapshot.secrets.items() if ns == namespace and not _is_managed(s)
    }
    targeting: dict[str, list[str]] = {}  # server → the Applications deploying to it

    envs = list(
        Environment.objects.filter(flavor=Environment.Flavor.VCLUSTER)
        # Open PRs (a reopened or recreated one gets its secret back), and the closed ones
        # whose secret is still to be removed.
        .filter(
            Q(pull_request__state="open")
            | (
                Q(cluster_secret__isnull=False)
                & ~Q(cluster_secret__state=ClusterSecret.State.DELETED)
            )
        )
        .select_related("pull_request__repository", "cluster_secret")
        .prefetch_related(
            Prefetch(
                "apps",
                # The vcluster's own app: where its kubeconfig Secret is (no status fields).
                queryset=EnvironmentApp.objects.filter(role=EnvironmentApp.Role.CLUSTER).only(
                    "environment_id", "role", "name", "destination_namespace"
                ),
            )
        )
    )
    wanted = set()
    batch = Batch()
    for env in envs:
        record = getattr(env, "cluster_secret", None) or ClusterSecret(
            environment=env, secret_name=target_name(env)
        )
        cluster_app = next(
            (a for a in env.apps.all() if a.role == EnvironmentApp.Role.CLUSTER), None
        )
        live = env.pull_request.state == "open" and env.is_live and env.state != "destroying"
        source_key = (
            (cluster_app.destination_namespace, f"vc-{cluster_app.name}") if cluster_app else None
        )
        source = snapshot.secrets.get(source_key) if source_key else None
        sts = (
            snapshot.statefulsets.get((source_key[0], cluster_app.name))
            if source_key and cluster_app
            else None
        )
        ready = bool(sts and ((sts.get("status") or {}).get("readyReplicas") or 0) >= 1)
        if not live or source_key is None or (source is None and sts is None):
            continue  # PR closed, or the vcluster is gone: its target goes once no app needs it
        wanted.add(record.secret_name)
        if source is not None and ready:
            _keep(
                env,
                record,
                source,
                "/".join(source_key),
                managed.get(record.secret_name),
                unmanaged_servers,
                taken,
                namespace,
                outcome,
                batch,
            )
        elif record.secret_name not in managed:
            waiting_for = "kubeconfig secret" if source is None else "control plane to be ready"
            _save(
                batch,
                record,
                ClusterSecret.State.WAITING,
                f"waiting for the vcluster's {waiting_for}",
            )
    unwanted = [secret for name, secret in managed.items() if name not in wanted]
    if batch.writes or unwanted:
        # Whom to refresh after a write, and who still needs a secret before it goes.
        if applications is None:
            try:
                applications = kube_gateway.list_applications(namespace)
            except Transient:
                raise
            except GatewayError as exc:
                log.warning("secret sync: cannot read the Applications: %s", exc)
                _flush(batch)
                return {**outcome.counts(), "error": 1}
            outcome.requests += 1
        for app in applications:
            destination = (app.get("spec") or {}).get("destination") or {}
            server = str(destination.get("server") or "").rstrip("/")
            targeting.setdefault(server, []).append(app["metadata"]["name"])
        for job in batch.writes:
            job.apps = targeting.get(job.server, [])
    _write_all(batch, namespace, outcome)
    by_name = {target_name(e): e for e in envs}
    for secret in unwanted:
        _remove(
            secret, targeting, namespace, outcome, by_name.get(secret["metadata"]["name"]), batch
        )
    _flush(batch)
    return outcome.counts()


def _write_all(batch: Batch, namespace: str, outcome: Outcome) -> None:
    """Create or replace the secrets and refresh their apps, several requests at a time
    (thousands of sequential round trips would take minutes), then record the results."""

    def write(job: Write) -> None:
        name = job.body["metadata"]["name"]
        try:
            if job.verb == "updated":
                kube_gateway.replace_secret(namespace, name, job.body)
            elif job.verb == "created":
                kube_gateway.create_secret(namespace, job.body)
        except Conflict:
            job.conflict = True  # another worker wrote it first: the next run compares again
            return
        except GatewayError as exc:
            job.error = str(exc)
            return
        for app in job.apps:
            try:
                kube_gateway.refresh_application(namespace, app, hard=False)
            except GatewayError as exc:
                log.info("could not refresh %s after the secret sync: %s", app, exc)

    if not batch.writes:
        return
    workers = max(1, min(settings.KUBERNETES_WRITE_CONCURRENCY, len(batch.writes)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="secret-sync") as pool:
        list(pool.map(write, batch.writes))
    now = timezone.now()
    for job in batch.writes:
        if job.conflict:
            continue
        if job.error:
            outcome.errors += 1
            _save(
                batch,
                job.record,
                ClusterSecret.State.ERROR,
                f"could not write the cluster secret: {job.error}",
                source=job.source_name,
                server=job.server,
            )
            continue
        if job.verb == "updated":
            outcome.updated += 1
        elif job.verb == "created":
            outcome.created += 1
        batch.events.append(
            Event(
                environment=job.env,
                pull_request=job.env.pull_request,
                kind="cluster-secret",
                message=f"Argo CD cluster secret {EVENT_VERBS[job.verb]} for {job.server} "
                f"(fingerprint {job.fingerprint[:12]})",
            )
        )
        _save(
            batch,
            job.record,
            ClusterSecret.State.SYNCED,
            "",
            source=job.source_name,
            server=job.server,
            fingerprint=job.fingerprint[:12],
            synced_at=now,
        )


def _save(batch: Batch, record: ClusterSecret, state: str, message: str, **fields: Any) -> None:
    """Change the row in memory; `_flush` writes every changed row at the end of the run."""
    changed = (
        record.pk is None
        or record.state != state
        or record.message != message[:1000]
        or any(getattr(record, k) != v for k, v in fields.items())
    )
    if not changed:
        return
    record.state, record.message = state, message[:1000]
    for key, value in fields.items():
        setattr(record, key, value)
    batch.records[record.environment_id] = record


RECORD_FIELDS = ["secret_name", "source", "server", "fingerprint", "state", "message", "synced_at"]


def _flush(batch: Batch) -> None:
    """The run's rows in a few statements (not one per environment)."""
    now = timezone.now()
    new = [r for r in batch.records.values() if r.pk is None]
    old = [r for r in batch.records.values() if r.pk is not None]
    for record in old:
        record.updated_at = now
    with transaction.atomic():
        # Two workers may meet an environment's first row at once: one row, not a crash.
        ClusterSecret.objects.bulk_create(
            new,
            update_conflicts=True,
            unique_fields=["environment"],
            update_fields=[*RECORD_FIELDS, "updated_at"],
        )
        ClusterSecret.objects.bulk_update(old, [*RECORD_FIELDS, "updated_at"])
        Event.objects.bulk_create(batch.events)


def _keep(
    env: Environment,
    record: ClusterSecret,
    source: Obj,
    source_name: str,
    current: Obj | None,
    unmanaged_servers: dict[str, str],
    taken: set[str],
    namespace: str,
    outcome: Outcome,
    batch: Batch,
) -> None:
    """Plan the write that makes the target match the source (and the apps to refresh)."""
    version = source_version(source)
    if (
        current is not None
        and record.state == ClusterSecret.State.SYNCED
        and (current["metadata"].get("annotations") or {}).get(ANNOTATION_SOURCE_VERSION) == version
    ):
        return  # the source has not changed since this target was written: nothing to read
    try:
        creds = read_credentials(source)
    except SourceError as exc:
        outcome.errors += 1
        _save(batch, record, ClusterSecret.State.ERROR, str(exc), source=source_name)
        return
    fingerprint = creds.fingerprint()
    if creds.server in unmanaged_servers and current is None:
        outcome.errors += 1
        _save(
            batch,
            record,
            ClusterSecret.State.CONFLICT,
            "an Argo CD cluster secret envportal does not manage "
            f"(`{unmanaged_servers[creds.server]}`) "
            f"already points at {creds.server}; envportal leaves it alone",
            source=source_name,
            server=creds.server,
        )
        return
    if current is None and record.secret_name in taken:
        outcome.errors += 1
        _save(
            batch,
            record,
            ClusterSecret.State.CONFLICT,
            f"a Secret envportal does not manage is already named `{record.secret_name}` in "
            f"{namespace}; envportal leaves it alone (rename or remove it)",
            source=source_name,
            server=creds.server,
        )
        return
    body = target_body(env, source_name, creds, fingerprint)
    body["metadata"]["annotations"][ANNOTATION_SOURCE_VERSION] = version
    verb = "created"
    if current is not None:
        if (current["metadata"].get("annotations") or {}).get(
            ANNOTATION_FINGERPRINT
        ) == fingerprint:
            if record.state == ClusterSecret.State.SYNCED:
                _save(
                    batch,
                    record,
                    ClusterSecret.State.SYNCED,
                    "",
                    source=source_name,
                    server=creds.server,
                    fingerprint=fingerprint[:12],
                    synced_at=record.synced_at or timezone.now(),
                )
                return
            verb = "adopted"  # right already, but not recorded: refresh its apps, record it
        else:
            verb = "updated"
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    batch.writes.append(
        Write(
            env=env,
            record=record,
            body=body,
            verb=verb,
            source_name=source_name,
            server=creds.server,
            fingerprint=fingerprint,
            apps=[],  # filled in once the Applications are read
        )
    )


def _remove(
    secret: Obj,
    targeting: dict[str, list[str]],
    namespace: str,
    outcome: Outcome,
    env: Environment | None,
    batch: Batch,
) -> None:
    """Delete a managed target no longer wanted, but only once no Application targets it
    (Argo CD strips the cascade finalizer of apps whose cluster secret went first)."""
    name = secret["metadata"]["name"]
    server = _server_of(secret)
    record = getattr(env, "cluster_secret", None) if env else None
    apps = targeting.get(server, [])
    if apps:
        if record is not None:
            _save(
                batch,
                record,
                ClusterSecret.State.DELETING,
                f"waiting for {len(apps)} application(s) to be deleted first: "
                + ", ".join(sorted(apps)[:3]),
            )
        return
    try:
        kube_gateway.delete_secret(namespace, name, secret["metadata"]["uid"])
    except (Conflict, NotFound):
        return
    except GatewayError as exc:
        outcome.errors += 1
        log.warning("could not delete cluster secret %s: %s", name, exc)
        return
    outcome.deleted += 1
    if record is not None and env is not None:
        _save(
            batch, record, ClusterSecret.State.DELETED, "removed after its applications were gone"
        )
        batch.events.append(
            Event(
                environment=env,
                pull_request=env.pull_request,
                kind="cluster-secret",
                message=f"Argo CD cluster secret removed ({server})",
            )
        )
