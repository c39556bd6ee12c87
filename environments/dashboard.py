"""What the dashboard shows: filtered environments of open PRs, summary counts, and per row
the facts a tester reads (commit freshness, lease) and the actions they may take.

A fixed number of queries whatever the number of rows: one aggregate for the counts, one
count and one page of environments (with their PR and repository joined)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet
from django.http import QueryDict
from django.utils import timezone

from environments import permissions
from environments.health import short
from environments.models import Environment

PAGE_SIZE = 100
EXPIRING_WITHIN = timedelta(hours=24)
STATES = [s.value for s in Environment.State]


@dataclass(frozen=True)
class Filters:
    repository: str = ""  # owner/name
    flavor: str = ""
    state: str = ""
    mine: bool = False
    q: str = ""

    @classmethod
    def from_query(cls, query: QueryDict) -> Filters:
        flavor = query.get("flavor", "")
        state = query.get("state", "")
        return cls(
            repository=query.get("repository", "").strip()[:201],
            flavor=flavor if flavor in Environment.Flavor.values else "",
            state=state if state in (*STATES, "expiring") else "",
            mine=query.get("mine") in ("1", "on", "true"),
            q=query.get("q", "").strip()[:200],
        )

    @property
    def active(self) -> bool:
        return any((self.repository, self.flavor, self.state, self.mine, self.q))

    def query(self, **override: Any) -> str:
        """This filter set as a query string (for links that keep it)."""
        values = {**self.__dict__, **override}
        query = QueryDict(mutable=True)
        for key, value in values.items():
            if value:
                query[key] = "1" if value is True else str(value)
        return query.urlencode()


def environments(filters: Filters, roles: permissions.Roles) -> QuerySet[Environment]:
    """Environments of open PRs (plus the ones still being destroyed), filtered."""
    now = timezone.now()
    qs = Environment.objects.filter(
        pull_request__state="open", pull_request__repository__enabled=True
    )
    if filters.repository and "/" in filters.repository:
        owner, name = filters.repository.split("/", 1)
        qs = qs.filter(
            pull_request__repository__owner__iexact=owner,
            pull_request__repository__name__iexact=name,
        )
    if filters.flavor:
        qs = qs.filter(flavor=filters.flavor)
    if filters.state == "expiring":
        qs = qs.filter(expiring_q(now))
    elif filters.state == "provisioning":
        qs = qs.filter(state__in=["pending", "provisioning"])
    elif filters.state:
        qs = qs.filter(state=filters.state)
    if filters.mine:
        qs = qs.filter(pull_request__author__iexact=roles.github_login or "\0")
    if filters.q:
        text = filters.q.lstrip("#")
        match = (
            Q(pull_request__title__icontains=filters.q)
            | Q(pull_request__branch__icontains=filters.q)
            | Q(pull_request__author__icontains=filters.q)
        )
        if text.isdigit():
            match |= Q(pull_request__number=int(text))
        qs = qs.filter(match)
    return qs.select_related("pull_request__repository").order_by(
        "pull_request__repository__owner",
        "pull_request__repository__name",
        "-pull_request__number",
        "flavor",
    )


def expiring_q(now: datetime) -> Q:
    live = [s for s in STATES if s not in ("destroying", "destroyed", "expired")]
    return Q(pinned=False, state__in=live, expires_at__lt=now + EXPIRING_WITHIN)


def summary(qs: QuerySet[Environment]) -> dict[str, int]:
    """Counts for the summary bar, in one query."""
    now = timezone.now()
    return qs.order_by().aggregate(
        total=Count("pk"),
        ready=Count("pk", filter=Q(state="ready")),
        provisioning=Count("pk", filter=Q(state__in=["pending", "provisioning"])),
        degraded=Count("pk", filter=Q(state="degraded")),
        invalid=Count("pk", filter=Q(state="invalid")),
        expiring=Count("pk", filter=expiring_q(now)),
    )


def commits(env: Environment) -> tuple[str, str]:
    """("ok" | "behind" | "", text): is the deployed commit the PR's head?"""
    head, deployed = env.pull_request.head_sha, env.deployed_sha
    if not deployed:
        return "", "not deployed yet"
    if deployed == head:
        return "ok", f"up to date ({short(head)})"
    history = env.pull_request.head_history
    if deployed in history:
        pushes = history.index(deployed) + 1
        return "behind", f"{pushes} push{'es' if pushes > 1 else ''} behind ({short(deployed)})"
    return "behind", f"behind: runs {short(deployed)}, head is {short(head)}"


def expires_in(env: Environment, now: datetime) -> str:
    if env.pinned:
        return "pinned"
    if not env.is_live or env.expires_at is None:
        return ""
    seconds = int((env.expires_at - now).total_seconds())
    if seconds <= 0:
        return "due now"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


@dataclass
class Row:
    env: Environment
    actions: list[str]
    commit_state: str
    commit_text: str
    expires_in: str
    expiring_soon: bool
    destroy_confirm: str


@dataclass
class Group:
    repository: str
    html_url: str
    rows: list[Row] = field(default_factory=list)


def row(env: Environment, roles: permissions.Roles, now: datetime) -> Row:
    commit_state, commit_text = commits(env)
    soon = (
        not env.pinned
        and env.is_live
        and env.expires_at is not None
        and env.expires_at < now + EXPIRING_WITHIN
    )
    pr = env.pull_request
    label = permissions.destroy_label(env)
    return Row(
        env=env,
        actions=permissions.available(roles, env, now),
        commit_state=commit_state,
        commit_text=commit_text,
        expires_in=expires_in(env, now),
        expiring_soon=soon,
        destroy_confirm=(
            f"Destroy the {env.flavor} environment of {pr.repository.full_name}#{pr.number} "
            f"({pr.title[:80]})? "
            + (
                "envportal leaves it out of the plugin generator's answer until it is "
                "recreated; the PR's other environments stay."
                if permissions.managed(env)
                else f"This removes the `{label}` label from the pull request, so every "
                "environment that needs that label goes."
            )
        ),
    )


def grouped(page: Page[Environment], roles: permissions.Roles) -> list[Group]:
    now = timezone.now()
    groups: dict[str, Group] = {}
    for env in page.object_list:
        repo = env.pull_request.repository
        group = groups.setdefault(repo.full_name, Group(repo.full_name, repo.html_url))
        group.rows.append(row(env, roles, now))
    return list(groups.values())


def paginate(qs: QuerySet[Environment], number: str | None) -> Page[Environment]:
    return Paginator(qs, PAGE_SIZE).get_page(number)


SUMMARY = [
    ("ready", "Ready", "ready"),
    ("provisioning", "Provisioning", "provisioning"),
    ("degraded", "Degraded", "degraded"),
    ("invalid", "Invalid", "invalid"),
    ("expiring", "Expiring within 24 h", "expiring"),
]


def summary_links(filters: Filters, counts: dict[str, int]) -> list[dict[str, Any]]:
    """The summary counts, each a link that filters the table by it (again: clears it)."""
    return [
        {
            "key": key,
            "label": label,
            "count": counts.get(key, 0),
            "active": filters.state == state,
            "query": filters.query(state="" if filters.state == state else state, page=""),
        }
        for key, label, state in SUMMARY
    ]


ACTION_LABELS = {
    "extend": "Extend +24 h",
    "redeploy": "Redeploy",
    "pin": "Pin",
    "unpin": "Unpin",
    "destroy": "Destroy…",
    "recreate": "Recreate",
}
