"""Pull requests: upsert what GitHub says (from a sync or a webhook), and record what changed."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from environments.models import Environment, Event, PullRequest, Repository

log = logging.getLogger(__name__)

# The fields a sync compares and writes; nothing else changes on an unchanged PR.
PR_FIELDS = (
    "title",
    "author",
    "branch",
    "base_branch",
    "head_sha",
    "labels",
    "draft",
    "state",
    "html_url",
    "updated_at",
)
HEAD_HISTORY = 20


SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1, or SHA-256 repositories


def _text(value: Any, size: int) -> str:
    """Display text: NUL bytes dropped (PostgreSQL cannot store them), cut to the column."""
    return str(value or "").replace("\x00", "")[:size]


def _name(value: Any, size: int, what: str) -> str:
    """A name that must be exact (branch, login): refused when it cannot be stored as it is."""
    text = str(value or "")
    if "\x00" in text:
        raise ValueError(f"pull_request {what} has NUL characters")
    if len(text) > size:
        raise ValueError(f"pull_request {what} is longer than {size} characters")
    return text


def _sha(value: Any) -> str:
    if not isinstance(value, str) or not SHA.match(value):
        raise ValueError("pull_request head.sha is not a commit sha")
    return value


@dataclass(frozen=True)
class PullData:
    """One PR as GitHub reports it (REST `pulls` shape), reduced to what envportal uses."""

    number: int
    title: str
    author: str
    branch: str
    base_branch: str
    head_sha: str
    labels: tuple[str, ...]
    draft: bool
    state: str
    html_url: str
    updated_at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PullData:
        """Read GitHub's JSON. ValueError when a name or sha cannot be stored exactly."""
        state = data.get("state", "open")
        if state == "closed" and (data.get("merged") or data.get("merged_at")):
            state = PullRequest.State.MERGED
        return cls(
            number=int(data["number"]),
            title=_text(data.get("title"), 1024),
            author=_name((data.get("user") or {}).get("login"), 100, "author"),
            branch=_name(data["head"]["ref"], 255, "head.ref"),
            base_branch=_name((data.get("base") or {}).get("ref"), 255, "base.ref"),
            head_sha=_sha(data["head"]["sha"]),
            labels=tuple(
                sorted(_name(label["name"], 100, "label") for label in data.get("labels") or [])
            ),
            draft=bool(data.get("draft")),
            state=state,
            html_url=_name(data.get("html_url"), 500, "html_url"),
            updated_at=parse_datetime(data["updated_at"]) if data.get("updated_at") else None,
        )

    def values(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "author": self.author,
            "branch": self.branch,
            "base_branch": self.base_branch,
            "head_sha": self.head_sha,
            "labels": list(self.labels),
            "draft": self.draft,
            "state": self.state,
            "html_url": self.html_url,
            "updated_at": self.updated_at,
        }


def parse_pulls(items: list[dict[str, Any]], where: str) -> list[PullData]:
    """GitHub's list answer as PullData; a PR that cannot be stored is skipped and logged."""
    parsed = []
    for item in items:
        try:
            parsed.append(PullData.from_json(item))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping a pull request of %s: %s", where, exc)
    return parsed


def describe_change(before: PullRequest, after: PullData) -> list[tuple[str, str]]:
    """Timeline events for what changed between the stored PR and GitHub's view."""
    changes = []
    if before.head_sha != after.head_sha:
        changes.append(("pushed", f"pushed {after.head_sha[:7]} (was {before.head_sha[:7]})"))
    if before.state != after.state:
        changes.append((after.state, f"pull request {after.state}"))
    if list(before.labels) != list(after.labels):
        changes.append(("labels", "labels: " + (", ".join(after.labels) or "none")))
    if before.title != after.title:
        changes.append(("edited", "title changed"))
    if before.draft != after.draft:
        changes.append(("draft", "marked as draft" if after.draft else "ready for review"))
    return changes


def apply_pulls(
    repository: Repository, pulls: Iterable[PullData], complete: bool
) -> dict[str, int]:
    """Upsert `pulls` of `repository`; when `complete` (the whole open list was read), PRs
    missing from it are closed. Writes only rows that changed; returns counts."""
    now = timezone.now()
    incoming = {pull.number: pull for pull in pulls}
    counts = {"created": 0, "updated": 0, "closed": 0}
    with transaction.atomic():
        existing = {pr.number: pr for pr in repository.pulls.select_for_update()}
        to_create, to_update, events = [], [], []
        renew: list[int] = []
        reopened: list[int] = []
        for number, pull in incoming.items():
            pr = existing.get(number)
            if pr is None:
                to_create.append(
                    PullRequest(
                        repository=repository, number=number, last_seen_at=now, **pull.values()
                    )
                )
                continue
            changes = describe_change(pr, pull)
            if changes or any(getattr(pr, f) != v for f, v in pull.values().items()):
                if pr.head_sha != pull.head_sha:
                    pr.head_history = [pr.head_sha, *pr.head_history][:HEAD_HISTORY]
                    if repository.renew_on_push and pull.state == PullRequest.State.OPEN:
                        renew.append(pr.pk)
                if pr.state != PullRequest.State.OPEN and pull.state == PullRequest.State.OPEN:
                    reopened.append(pr.pk)
                for field, value in pull.values().items():
                    setattr(pr, field, value)
                pr.last_seen_at = now
                to_update.append(pr)
                events += [Event(pull_request=pr, kind=kind, message=msg) for kind, msg in changes]
        if complete:
            for number, pr in existing.items():
                if number not in incoming and pr.state == PullRequest.State.OPEN:
                    pr.state = PullRequest.State.CLOSED
                    to_update.append(pr)
                    counts["closed"] += 1
                    events.append(
                        Event(pull_request=pr, kind="closed", message="pull request closed")
                    )
        created = PullRequest.objects.bulk_create(to_create)
        events += [
            Event(pull_request=pr, kind="opened", message="pull request opened") for pr in created
        ]
        PullRequest.objects.bulk_update(to_update, [*PR_FIELDS, "head_history", "last_seen_at"])
        Event.objects.bulk_create(events)
        events = _new_leases(repository, renew, reopened, now)
        Event.objects.bulk_create(events)
    counts["created"] = len(created)
    counts["updated"] = len(to_update) - counts["closed"]
    return counts


def _new_leases(
    repository: Repository, renewed: list[int], reopened: list[int], now: datetime
) -> list[Event]:
    """A push renews the lease where the repository says so; a reopened PR starts over (and
    is no longer held back by an earlier destroy)."""
    until = now + timedelta(hours=repository.default_ttl_hours)
    live = Environment.objects.exclude(state__in=["destroying", "destroyed", "expired"])
    renewing = list(live.filter(pull_request_id__in=renewed, pinned=False, expires_at__lt=until))
    restarting = list(Environment.objects.filter(pull_request_id__in=reopened))
    Environment.objects.filter(pk__in=[e.pk for e in renewing]).update(
        expires_at=until, expiry_warned=""
    )
    Environment.objects.filter(pk__in=[e.pk for e in restarting]).update(
        expires_at=until, expiry_warned="", held=False
    )
    events = [
        Event(environment=env, pull_request_id=env.pull_request_id, kind="renewed",
              message=f"lease renewed by a push: expires {until:%Y-%m-%d %H:%M} UTC")
        for env in renewing
    ]  # fmt: skip
    events += [
        Event(environment=env, pull_request_id=env.pull_request_id, kind="lease",
              message=f"pull request reopened: a fresh lease until {until:%Y-%m-%d %H:%M} UTC")
        for env in restarting
    ]  # fmt: skip
    return events


def record_webhook_pull_request(payload: dict[str, Any]) -> tuple[Repository | None, str]:
    """Apply a `pull_request` webhook at once. Returns the repository (None when envportal does
    not know it, or it is disabled) and a short outcome for the response and the log."""
    repo = payload.get("repository") or {}
    owner = str((repo.get("owner") or {}).get("login") or "")
    name = str(repo.get("name") or "")
    repository = Repository.objects.filter(owner__iexact=owner, name__iexact=name).first()
    if repository is None or not repository.enabled:
        return None, f"ignored: {owner}/{name} is not a repository envportal manages"
    pull = PullData.from_json(payload["pull_request"])
    stored = repository.pulls.filter(number=pull.number).only("updated_at").first()
    if stored and stored.updated_at and pull.updated_at and pull.updated_at < stored.updated_at:
        # Deliveries can arrive out of order (or be redelivered late): never go back in time.
        return repository, f"ignored: an older event for {repository.full_name}#{pull.number}"
    apply_pulls(repository, [pull], complete=False)
    return repository, f"{payload.get('action')}: {repository.full_name}#{pull.number}"
