"""Managed mode: envportal as the Argo CD Plugin generator of an ApplicationSet.

Argo CD's Plugin generator POSTs `{"applicationSetName": ..., "input": {"parameters": {...}}}`
to `<baseUrl>/api/v1/getparams.execute` with the ConfigMap's bearer token and renders one
Application per object of `output.parameters`. envportal answers with the PRs that *should*
have an environment, with the Pull Request generator's keys, so a template ports by changing
its generator block only.

The answer comes from the database (kept by the PR sync and webhooks), never from a live
GitHub call: a GitHub outage leaves the last known set in place instead of an empty list,
which would make Argo CD delete every environment (argo-cd issues 11464, 14318).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from environments import argo_templates
from environments.models import Environment, PullRequest, Repository


class PluginError(Exception):
    """A request Argo CD should see fail (it then keeps the Applications it has)."""

    status = 400


class UnknownRepository(PluginError):
    status = 404


class NotSyncedYet(PluginError):
    status = 503


@dataclass(frozen=True)
class Query:
    owner: str
    repo: str
    flavor: str = ""
    label: str = ""
    include_drafts: bool = True

    @classmethod
    def from_input(cls, body: Any) -> Query:
        """Read the generator's `input.parameters` (`repository` required)."""
        if not isinstance(body, dict):
            raise PluginError("the body must be a JSON object")
        given = body.get("input") or {}
        if not isinstance(given, dict):
            raise PluginError("input must be an object")
        parameters = given.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise PluginError("input.parameters must be an object")
        if any("\x00" in str(value) for value in parameters.values()):
            raise PluginError("input.parameters contain a NUL character")
        owner, _, repo = str(parameters.get("repository") or "").partition("/")
        if not owner or not repo:
            raise PluginError("input.parameters.repository must be owner/name")
        flavor = str(parameters.get("flavor") or "")
        if flavor and flavor not in Environment.Flavor.values:
            raise PluginError(f"input.parameters.flavor must be one of {Environment.Flavor.values}")
        drafts = str(parameters.get("include_drafts", "true")).lower()
        return cls(
            owner=owner,
            repo=repo,
            flavor=flavor,
            label=str(parameters.get("label") or ""),
            include_drafts=drafts not in ("false", "0", "no"),
        )


def params(pr: PullRequest) -> dict[str, Any]:
    """The Pull Request generator's parameters for this PR (labels included)."""
    return argo_templates.pull_request_params(
        number=pr.number,
        branch=pr.branch,
        target_branch=pr.base_branch,
        head_sha=pr.head_sha,
        author=pr.author,
        title=pr.title,
        labels=list(pr.labels),
        go_template=True,
    )


def wanted(query: Query) -> list[dict[str, Any]]:
    """One parameter object per open PR that should have an environment: selected by the
    label (if any), drafts as asked, not held back by a destroy or an expiry, and within the
    repository's quota (the rest wait in the queue)."""
    repository = Repository.objects.filter(
        owner__iexact=query.owner, name__iexact=query.repo
    ).first()
    if repository is None:
        raise UnknownRepository(f"envportal does not know {query.owner}/{query.repo}")
    if not repository.enabled:
        # Disabled by an admin: an error keeps Argo CD's Applications as they are.
        raise UnknownRepository(f"{repository.full_name} is disabled in envportal")
    if repository.pulls_synced_at is None:
        # Never read from GitHub (new, re-created, or the token refused): an empty answer
        # would make Argo CD delete every Application; an error keeps them.
        raise NotSyncedYet(f"envportal has not read {repository.full_name}'s pull requests yet")
    admitted, _ = queue(repository, query.flavor, query.label, query.include_drafts)
    return [params(pr) for pr in admitted]


QUEUE_REASON = "waiting in the queue"


def queue(
    repository: Repository, flavor: str, label: str = "", include_drafts: bool = True
) -> tuple[list[PullRequest], list[PullRequest]]:
    """The PRs that get an environment of `flavor` now, and those waiting for the quota.

    Running environments keep their place (a new PR never evicts one); then the oldest PR
    first. A fixed number of queries whatever the number of PRs."""
    envs = Environment.objects.filter(pull_request__repository=repository)
    if flavor:
        envs = envs.filter(flavor=flavor)
    held = set(envs.filter(held=True).values_list("pull_request_id", flat=True))
    # Admitted before (any state but gone or still queued): they keep their place.
    running = set(
        envs.exclude(state__in=["destroyed", "expired"])
        .exclude(state="pending", reason__startswith=QUEUE_REASON)
        .values_list("pull_request_id", flat=True)
    )
    candidates = [
        pr
        for pr in repository.pulls.filter(state=PullRequest.State.OPEN).order_by("number")
        if (not label or label in pr.labels)
        and (include_drafts or not pr.draft)
        and pr.pk not in held
    ]
    quota = repository.max_environments
    if not quota or len(candidates) <= quota:
        return candidates, []
    ordered = sorted(candidates, key=lambda pr: (pr.pk not in running, pr.number))
    admitted = sorted(ordered[:quota], key=lambda pr: pr.number)
    return admitted, ordered[quota:]
