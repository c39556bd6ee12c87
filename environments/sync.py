"""The sync engine: GitHub's open PRs and the cluster's state into the database, cheaply.

- `sync_pull_requests`: one conditional request per repository page (304s are free), with
  backing off when the rate-limit budget runs low.
- `sync_cluster`: one list call per kind, discovery of repositories from the ApplicationSets,
  and one assessed state per environment.

A failed read never concludes that something is gone: the last known state is kept and the
source is marked stale with its error.
"""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from environments import (
    discovery,
    github_gateway,
    health,
    kube_gateway,
    lifecycle,
    plugin,
    pulls,
)
from environments.errors import GatewayError, RateLimited
from environments.models import (
    Environment,
    EnvironmentApp,
    Event,
    PullRequest,
    Repository,
    SyncStatus,
)

log = logging.getLogger(__name__)

KUBERNETES = "kubernetes"
LOW_BUDGET = 0.02  # back off when less than 2 % of the hourly GitHub budget is left
LIVE_STATES = [s for s in Environment.State.values if s not in ("destroyed", "expired")]
APP_FIELDS = (
    "applicationset",
    "role",
    "sync",
    "health",
    "operation_phase",
    "operation_message",
    "conditions",
    "revision",
    "destination_server",
    "destination_namespace",
    "exists",
    "resources",
)
WAITING_FOR_SECRET = "waiting for the Argo CD cluster secret"  # noqa: S105 - a reason
ENV_FIELDS = (
    "state",
    "reason",
    "health",
    "sync",
    "deployed_sha",
    "url",
    "namespace",
    "namespace_exists",
    "vcluster_ready",
)


def github_key(api_url: str) -> str:
    return f"github:{api_url}"


def _status(key: str) -> SyncStatus:
    return SyncStatus.objects.get_or_create(key=key)[0]


def _record(key: str, error: str = "", details: dict[str, Any] | None = None) -> SyncStatus:
    status = _status(key)
    now = timezone.now()
    status.last_attempt_at = now
    status.last_error = error[:1000]
    if not error:
        status.last_success_at = now
    if details is not None:
        status.details = details
    status.save(update_fields=["last_attempt_at", "last_error", "last_success_at", "details"])
    return status


# --- GitHub ----------------------------------------------------------------------------------


def sync_pull_requests(repositories: list[Repository] | None = None) -> dict[str, Any]:
    """Read open PRs of every enabled repository; write what changed."""
    repos = (
        repositories if repositories is not None else list(Repository.objects.filter(enabled=True))
    )
    summary: dict[str, Any] = {
        "repositories": 0,
        "requests": 0,
        "not_modified": 0,
        "changed": 0,
        "errors": [],
    }
    by_api: dict[str, list[Repository]] = defaultdict(list)
    for repo in repos:
        by_api[repo.api_url].append(repo)
    for api_url, group in by_api.items():
        status = _status(github_key(api_url))
        now = timezone.now()
        if status.backoff_until and status.backoff_until > now:
            message = f"GitHub rate limit low: waiting until {status.backoff_until:%H:%M:%S} UTC"
            summary["errors"].append(message)
            SyncStatus.objects.filter(pk=status.pk).update(last_attempt_at=now, last_error=message)
            continue
        rate = None
        error = ""
        for repo in group:
            try:
                result = github_gateway.list_open_pulls(
                    api_url, settings.GITHUB_TOKEN, repo.owner, repo.name, _etags(repo)
                )
            except RateLimited as exc:
                error = str(exc)
                status.backoff_until = exc.reset_at or now + timedelta(minutes=1)
                status.save(update_fields=["backoff_until"])
                break
            except GatewayError as exc:
                error = str(exc)
                log.warning("GitHub sync of %s failed: %s", repo.full_name, exc)
                continue
            summary["repositories"] += 1
            summary["requests"] += result.requests
            summary["not_modified"] += result.not_modified
            rate = result.rate or rate
            counts = _apply_pages(repo, result)
            summary["changed"] += sum(counts.values())
        details = rate.as_dict() if rate else status.details
        _record(github_key(api_url), error, details)
        if rate and rate.limit and rate.remaining < max(10, rate.limit * LOW_BUDGET):
            SyncStatus.objects.filter(key=github_key(api_url)).update(backoff_until=rate.reset_at)
        if error:
            summary["errors"].append(error)
    return summary


def _etags(repo: Repository) -> dict[str, str]:
    return dict(repo.pulls_etags.get("etags") or {})


def _apply_pages(repo: Repository, result: github_gateway.OpenPulls) -> dict[str, int]:
    """Merge changed pages with unchanged ones (whose PR numbers were kept) and apply them."""
    numbers: dict[str, list[int]] = dict(repo.pulls_etags.get("numbers") or {})
    counts: dict[str, int] = {}
    if result.changed:
        changed: list[pulls.PullData] = []
        unchanged: list[int] = []
        for page, items in result.pages.items():
            if items is None:
                unchanged += numbers.get(str(page), [])
            else:
                data = pulls.parse_pulls(items, repo.full_name)
                numbers[str(page)] = [p.number for p in data]
                changed += data
        numbers = {p: n for p, n in numbers.items() if int(p) in result.pages}
        kept = list(repo.pulls.filter(number__in=unchanged))
        counts = pulls.apply_pulls(repo, [*changed, *(_as_data(pr) for pr in kept)], complete=True)
    repo.pulls_etags = {"etags": result.etags, "numbers": numbers}
    repo.pulls_synced_at = timezone.now()
    repo.save(update_fields=["pulls_etags", "pulls_synced_at"])
    return counts


def _as_data(pr: PullRequest) -> pulls.PullData:
    return pulls.PullData(
        number=pr.number,
        title=pr.title,
        author=pr.author,
        branch=pr.branch,
        base_branch=pr.base_branch,
        head_sha=pr.head_sha,
        labels=tuple(pr.labels),
        draft=pr.draft,
        state=pr.state,
        html_url=pr.html_url,
        updated_at=pr.updated_at,
    )


# --- Cluster ---------------------------------------------------------------------------------


def label_filters(sources: list[discovery.Source]) -> dict[str, str]:
    """Per flavour, a label every one of its ApplicationSets requires: without it on a PR,
    none of them yields that PR (how destroy and recreate work without managed mode)."""
    filters = {}
    for flavor in sorted({s.flavor for s in sources}):
        common = set.intersection(*(set(s.labels) for s in sources if s.flavor == flavor))
        if common:
            filters[flavor] = sorted(common)[0]
    return filters


def _quota_queues(repo: Repository, sources: list[discovery.Source]) -> dict[str, dict[int, str]]:
    """Managed flavours over the repository's quota: the waiting PRs, each with its reason."""
    if not repo.max_environments:
        return {}
    queues: dict[str, dict[int, str]] = {}
    for source in sources:
        if not source.managed or source.flavor in queues:
            continue
        label = source.labels[0] if source.labels else ""
        _, waiting = plugin.queue(repo, source.flavor, label, source.include_drafts)
        queues[source.flavor] = {
            pr.pk: f"{plugin.QUEUE_REASON} ({position} of {len(waiting)}): {repo.full_name} runs "
            f"at most {repo.max_environments} {source.flavor} environments at once"
            for position, pr in enumerate(waiting, start=1)
        }
    return queues


def managed_flavors(sources: list[discovery.Source]) -> list[str]:
    """Flavours whose every ApplicationSet asks envportal (managed mode): destroy, expiry and
    recreate work there through the plugin's answer, no label needed."""
    flavors = sorted({s.flavor for s in sources})
    return [f for f in flavors if all(s.managed for s in sources if s.flavor == f)]


def discover(sources: list[discovery.Source]) -> tuple[list[Repository], int]:
    """Create Repository rows for the generators' repositories; keep admins' settings.
    Returns the repositories and how many are new."""
    wanted: dict[tuple[str, str, str], list[discovery.Source]] = defaultdict(list)
    for source in sources:
        wanted[(source.api_url, source.owner, source.repo)].append(source)
    existing = {(r.api_url, r.owner, r.name): r for r in Repository.objects.all()}
    repos, created = [], 0
    for key, group in wanted.items():
        appsets = sorted({s.applicationset for s in group})
        labels = sorted({label for s in group for label in s.labels})
        filters = label_filters(group)
        managed = managed_flavors(group)
        repo = existing.get(key)
        if repo is None:
            repo = Repository.objects.create(
                api_url=key[0],
                owner=key[1],
                name=key[2],
                applicationsets=appsets,
                opt_in_label=",".join(labels),
                label_filters=filters,
                managed_flavors=managed,
            )
            Event.objects.create(
                kind="discovered", message=f"discovered {repo.full_name} in {', '.join(appsets)}"
            )
            created += 1
        elif (
            repo.applicationsets,
            repo.opt_in_label,
            repo.label_filters,
            repo.managed_flavors,
        ) != (
            appsets,
            ",".join(labels),
            filters,
            managed,
        ):
            repo.applicationsets, repo.opt_in_label = appsets, ",".join(labels)
            repo.label_filters, repo.managed_flavors = filters, managed
            repo.save(
                update_fields=[
                    "applicationsets",
                    "opt_in_label",
                    "label_filters",
                    "managed_flavors",
                ]
            )
        repos.append(repo)
    return repos, created


def _cluster_servers(snapshot: kube_gateway.ClusterSnapshot, namespace: str) -> set[str]:
    servers = set()
    for (ns, _), secret in snapshot.secrets.items():
        labels = secret["metadata"].get("labels") or {}
        if ns == namespace and labels.get("argocd.argoproj.io/secret-type") == "cluster":
            raw = (secret.get("data") or {}).get("server", "")
            servers.add(base64.b64decode(raw).decode(errors="replace").rstrip("/"))
    return servers


def _appset_errors(snapshot: kube_gateway.ClusterSnapshot) -> dict[str, str]:
    errors = {}
    for appset in snapshot.applicationsets:
        for condition in (appset.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "ErrorOccurred" and condition.get("status") == "True":
                errors[appset["metadata"]["name"]] = str(condition.get("message", ""))
    return errors


def sync_cluster() -> dict[str, Any]:
    """Read the cluster once; discover repositories; assess every environment; write changes."""
    namespace = settings.ARGOCD_NAMESPACE
    try:
        snapshot = kube_gateway.snapshot(namespace)
    except GatewayError as exc:
        log.warning("cluster sync failed, keeping the last known state: %s", exc)
        _record(KUBERNETES, str(exc))
        return {"error": str(exc), "requests": 0}
    sources = discovery.sources(
        snapshot.applicationsets, settings.GITHUB_API_URL, settings.ARGOCD_PLUGIN_CONFIGMAP
    )
    _, discovered = discover(sources)
    world = health.World(
        namespaces=snapshot.namespaces,
        statefulsets=snapshot.statefulsets,
        secrets=set(snapshot.secrets),
        cluster_servers=_cluster_servers(snapshot, namespace),
        appset_errors=_appset_errors(snapshot),
    )
    apps_by_owner: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for app in snapshot.applications:
        for ref in app["metadata"].get("ownerReferences") or []:
            apps_by_owner[ref.get("uid", "")][app["metadata"]["name"]] = app
    summary = {
        "requests": snapshot.requests,
        "environments": 0,
        "changed": 0,
        "discovered": discovered,
        "needs_cluster_secrets": 0,
    }
    rows = _rows()
    destroying = lifecycle.destroying_ids()
    expired = lifecycle.expired_ids()
    for repo in rows.repositories:
        repo_sources = [
            s
            for s in sources
            if (s.api_url, s.owner.lower(), s.repo.lower())
            == (repo.api_url, repo.owner.lower(), repo.name.lower())
        ]
        counts = _sync_repository(
            repo, repo_sources, apps_by_owner, world, destroying, expired, rows
        )
        summary["environments"] += counts["environments"]
        summary["changed"] += counts["changed"]
        summary["needs_cluster_secrets"] += counts["needs_cluster_secrets"]
    _record(KUBERNETES, "", {"requests": snapshot.requests})
    summary["refreshed"] = len(refresh_pending())
    return summary


@dataclass
class Rows:
    """What a cluster sync compares with the cluster, read in four queries (grouped here:
    Django's nested prefetch clones a query per row, which costs more than the sync)."""

    repositories: list[Repository]
    pulls: dict[int, list[PullRequest]]  # repository id → its PRs to assess
    environments: dict[int, list[Environment]]  # pull request id → its environments
    apps: dict[int, list[EnvironmentApp]]  # environment id → its app rows


def _rows() -> Rows:
    repositories = list(Repository.objects.filter(enabled=True))
    wanted = PullRequest.objects.filter(repository__enabled=True).filter(
        Q(state=PullRequest.State.OPEN) | Q(environments__state__in=LIVE_STATES)
    )
    pulls: dict[int, list[PullRequest]] = defaultdict(list)
    by_id = {}
    for pr in PullRequest.objects.filter(pk__in=wanted.values("pk")).order_by("pk"):
        pulls[pr.repository_id].append(pr)
        by_id[pr.pk] = pr
    environments: dict[int, list[Environment]] = defaultdict(list)
    for env in Environment.objects.filter(pull_request__in=wanted.values("pk")).order_by("pk"):
        env.pull_request = by_id[env.pull_request_id]  # no query per row later
        environments[env.pull_request_id].append(env)
    apps: dict[int, list[EnvironmentApp]] = defaultdict(list)
    for app in EnvironmentApp.objects.filter(
        environment__pull_request__in=wanted.values("pk")
    ).order_by("pk"):
        apps[app.environment_id].append(app)
    return Rows(repositories, pulls, environments, apps)


def _sync_repository(
    repo: Repository,
    sources: list[discovery.Source],
    apps_by_owner: dict[str, dict[str, dict[str, Any]]],
    world: health.World,
    destroying: set[int],
    expired: set[int],
    rows: Rows,
) -> dict[str, int]:
    now = timezone.now()
    flavors = sorted({s.flavor for s in sources})
    env_updates: list[Environment] = []
    env_creates: list[Environment] = []
    events: list[Event] = []
    app_rows: list[tuple[Environment, list[health.AppView], dict[str, EnvironmentApp]]] = []
    queues = _quota_queues(repo, sources)
    leaving_queue: list[int] = []
    for pr in rows.pulls.get(repo.pk, []):
        params = discovery.PullParams(
            number=pr.number,
            branch=pr.branch,
            base_branch=pr.base_branch,
            head_sha=pr.head_sha,
            author=pr.author,
            title=pr.title,
            labels=tuple(pr.labels),
        )
        existing = {env.flavor: env for env in rows.environments.get(pr.pk, [])}
        for flavor in sorted(set(flavors) | set(existing)):
            flavor_sources = [s for s in sources if s.flavor == flavor]
            env = existing.get(flavor)
            held = env is not None and env.held
            selected = [s for s in flavor_sources if discovery.selects(s, params, held, pr.draft)]
            queued = queues.get(flavor, {}).get(pr.pk)
            if queued:
                selected = []  # over the quota: the plugin leaves it out for now
            is_open = pr.state == PullRequest.State.OPEN
            if env is None and not (is_open and (selected or queued)):
                continue
            expected = [discovery.expected(s, params) for s in (selected or flavor_sources)]
            apps = {}
            for source in flavor_sources:
                apps.update(apps_by_owner.get(source.uid, {}))
            result = health.assess(
                is_open and bool(selected), pr.head_sha, flavor, expected, apps, world
            )
            current = (
                {app.name: app for app in rows.apps.get(env.pk, [])} if env is not None else {}
            )
            if env is None:
                env = Environment(
                    pull_request=pr,
                    flavor=flavor,
                    created_at=now,
                    state_changed_at=now,
                    expires_at=now + timedelta(hours=repo.default_ttl_hours),
                    state="",
                )
                env_creates.append(env)
            if queued and is_open and result.state == "destroyed" and env.state != "destroyed":
                result.state, result.reason = "pending", queued
            elif not queued and env.reason.startswith(plugin.QUEUE_REASON) and not env.pinned:
                leaving_queue.append(env.pk)  # its lease starts now, not when it queued
            if result.state == "destroyed" and held and is_open:
                result.reason = "destroyed on request: left out until someone recreates it"
            if result.state == "destroyed" and env.pk in expired:
                result.state, result.reason = (
                    "expired",
                    "the lease ended; its applications are gone",
                )
            if env.state in ("destroyed", "expired") and result.state in ("destroyed", "expired"):
                continue
            if env.pk in destroying and result.state != "destroyed":
                result.state, result.reason = "destroying", env.reason  # the worker is on it
            changed = _apply_assessment(env, result, now, events)
            if any(v.exists for v in result.apps):
                env.last_seen_at = now
            if changed and env.pk:
                env_updates.append(env)
            app_rows.append((env, result.apps, current))
    with transaction.atomic():
        Environment.objects.bulk_create(env_creates)
        Environment.objects.bulk_update(
            env_updates, [*ENV_FIELDS, "state_changed_at", "last_seen_at"]
        )
        Event.objects.bulk_create(events)
        _write_apps(app_rows)
        Environment.objects.filter(pk__in=leaving_queue).update(
            expires_at=now + timedelta(hours=repo.default_ttl_hours), expiry_warned=""
        )
    waiting = sum(
        1
        for env, _, _ in app_rows
        if env.flavor == "vcluster"
        and (env.state == "destroying" or env.reason.startswith(WAITING_FOR_SECRET))
    )
    return {
        "environments": len(app_rows),
        "changed": len(env_creates) + len(env_updates),
        "needs_cluster_secrets": waiting,
    }


def _apply_assessment(
    env: Environment, result: health.Assessment, now: Any, events: list[Event]
) -> bool:
    values = {
        "state": result.state,
        "reason": result.reason[:1000],
        "health": result.health,
        "sync": result.sync,
        "deployed_sha": result.deployed_sha,
        "url": result.url[:500],
        "namespace": result.namespace,
        "namespace_exists": result.namespace_exists,
        "vcluster_ready": result.vcluster_ready,
    }
    changed = any(getattr(env, k) != v for k, v in values.items())
    if env.state != result.state:
        previous = env.state or "new"
        env.state_changed_at = now
        events.append(
            Event(
                environment=env,
                pull_request=env.pull_request,
                kind="state",
                message=f"{previous} → {result.state}: {result.reason}"[:1000],
                details={"from": previous, "to": result.state},
            )
        )
    for key, value in values.items():
        setattr(env, key, value)
    return changed


def _write_apps(
    rows: list[tuple[Environment, list[health.AppView], dict[str, EnvironmentApp]]],
) -> None:
    """Upsert each environment's app rows; drop rows of apps neither expected nor present."""
    creates, updates, gone = [], [], []
    for env, views, current in rows:
        seen = set()
        for v in views:
            values = {
                "applicationset": v.applicationset,
                "role": v.role,
                "sync": v.sync,
                "health": v.health,
                "operation_phase": v.operation_phase,
                "operation_message": v.operation_message[:2000],
                "conditions": v.conditions,
                "revision": v.revision[:64],
                "destination_server": v.destination_server[:500],
                "destination_namespace": v.destination_namespace,
                "exists": v.exists,
                "resources": v.resources,
            }
            seen.add(v.name)
            row = current.get(v.name)
            if row is None:
                creates.append(EnvironmentApp(environment=env, name=v.name, **values))
            elif any(getattr(row, k) != val for k, val in values.items()):
                for k, val in values.items():
                    setattr(row, k, val)
                updates.append(row)
        gone += [row.pk for name, row in current.items() if name not in seen]
    EnvironmentApp.objects.bulk_create(creates)
    EnvironmentApp.objects.bulk_update(updates, list(APP_FIELDS))
    if gone:
        EnvironmentApp.objects.filter(pk__in=gone).delete()


# --- Everything ------------------------------------------------------------------------------


def sync_all() -> dict[str, Any]:
    """Discovery and cluster, GitHub, then cluster again so new PRs get their environments."""
    first = sync_cluster()
    github = sync_pull_requests()
    cluster = sync_cluster() if "error" not in first else first
    return {"github": github, "cluster": cluster}


def refresh_applicationsets(repository: Repository) -> list[str]:
    """Annotate the repository's ApplicationSets so Argo CD lists its PRs now."""
    started = timezone.now()
    refreshed = []
    for name in repository.applicationsets:
        kube_gateway.refresh_applicationset(settings.ARGOCD_NAMESPACE, name)
        refreshed.append(name)
    # Done: forget the webhook's intent, unless a newer webhook asked again meanwhile.
    Repository.objects.filter(pk=repository.pk, refresh_requested_at__lte=started).update(
        refresh_requested_at=None
    )
    return refreshed


PENDING_REFRESH_AFTER = timedelta(seconds=20)


def refresh_pending(older_than: timedelta = PENDING_REFRESH_AFTER) -> list[str]:
    """Refreshes that webhooks asked for and no worker did (the broker was down, or restarted
    and lost its queue): the repositories' names. Run by the cluster sync."""
    cutoff = timezone.now() - older_than
    done = []
    for repository in Repository.objects.filter(enabled=True, refresh_requested_at__lt=cutoff):
        try:
            refresh_applicationsets(repository)
        except GatewayError as exc:
            log.warning("pending refresh of %s failed: %s", repository.full_name, exc)
            continue
        done.append(repository.full_name)
    return done


# --- Freshness, for pages and the API --------------------------------------------------------

STALE_AFTER = {KUBERNETES: timedelta(minutes=2), "github": timedelta(minutes=5)}


@dataclass(frozen=True)
class Freshness:
    key: str
    label: str
    age_seconds: int | None
    stale: bool
    error: str
    budget: dict[str, Any]


def freshness() -> list[Freshness]:
    """How old each source's data is, whether it is stale, and GitHub's remaining budget."""
    result = []
    for status in SyncStatus.objects.order_by("key"):
        kind = "github" if status.key.startswith("github:") else status.key
        age = status.age()
        label = "Kubernetes" if kind == KUBERNETES else f"GitHub ({status.key.split(':', 1)[1]})"
        result.append(
            Freshness(
                key=status.key,
                label=label,
                age_seconds=int(age.total_seconds()) if age is not None else None,
                stale=status.is_stale(STALE_AFTER.get(kind, timedelta(minutes=5))),
                error=status.last_error,
                budget=status.details if kind == "github" else {},
            )
        )
    return result
