"""Feedback on GitHub: one sticky comment per PR and a GitHub Deployment per environment.

Deduplicated and rate-limit aware: a comment is written only when what it says changed (a
digest of its text is kept on the PR; expiry is an absolute time, so a ticking clock changes
nothing), a deployment status only when the environment's state maps to a new one, and
nothing at all while the GitHub budget is low. Deployments are transient, never merge the
default branch into the PR (`auto_merge: false`) and skip status checks
(`required_contexts: []`).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, Q
from django.urls import reverse
from django.utils import timezone

from environments import github_gateway, sync
from environments.errors import GatewayError, Transient
from environments.models import Environment, Event, PullRequest, Repository, SyncStatus

log = logging.getLogger(__name__)
MARKER = "<!-- envportal:environments -->"
RECENT = timedelta(days=7)
WARNED = {"24h": "24 h", "1h": "1 h"}

# environment state → GitHub deployment status
DEPLOYMENT_STATE = {
    "pending": "queued",
    "provisioning": "in_progress",
    "out-of-date": "in_progress",
    "ready": "success",
    "degraded": "failure",
    "invalid": "failure",
    "destroying": "inactive",
    "destroyed": "inactive",
    "expired": "inactive",
}


def _cell(text: str) -> str:
    """Text for a Markdown table cell: no pipes, no newlines, no HTML."""
    return (text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;"))[
        :200
    ]


def _url(url: str) -> str:
    """A link target that cannot break out of Markdown: http(s) only, no spaces or parens."""
    if not url.startswith(("http://", "https://")):
        return ""
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C")


def portal_link(env: Environment) -> str:
    if not settings.PORTAL_URL:
        return ""
    pr = env.pull_request
    path = reverse(
        "environment", args=[pr.repository.owner, pr.repository.name, pr.number, env.flavor]
    )
    return settings.PORTAL_URL + path


def comment_body(pr: PullRequest, envs: list[Environment]) -> str:
    lines = [
        MARKER,
        "### Preview environments",
        "",
        "| environment | state | where | expires | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for env in envs:
        expires = (
            "pinned"
            if env.pinned
            else (f"{env.expires_at:%Y-%m-%d %H:%M} UTC" if env.expires_at and env.is_live else "")
        )
        if expires and env.expiry_warned in WARNED:
            expires = f"⚠ within {WARNED[env.expiry_warned]}: {expires}"
        url = _url(env.url)
        where = f"[open]({url})" if url and env.state == "ready" else ""
        link = portal_link(env)
        lines.append(
            f"| {env.flavor} | **{env.state}**: {_cell(env.reason)} | {where} | {expires} | "
            + (f"[details]({link})" if link else "")
            + " |"
        )
    lines += ["", "_Kept up to date by envportal; extend or destroy from the portal._"]
    return "\n".join(lines)


def _budget_low(repository: Repository) -> bool:
    status = SyncStatus.objects.filter(key=sync.github_key(repository.api_url)).first()
    return bool(status and status.backoff_until and status.backoff_until > timezone.now())


def publish(repository_ids: list[int] | None = None) -> dict[str, int]:
    """Bring every open PR's comment and deployments in step with its environments."""
    counts = {"comments": 0, "statuses": 0, "deployments": 0, "skipped": 0, "errors": 0}
    repositories = Repository.objects.filter(enabled=True, feedback=True)
    if repository_ids is not None:
        repositories = repositories.filter(pk__in=repository_ids)
    for repository in repositories:
        if _budget_low(repository):
            counts["skipped"] += 1  # the PR sync needs the budget more
            continue
        # Open PRs, and closed ones whose environments changed lately (their last word).
        recent = timezone.now() - RECENT
        pulls = (
            repository.pulls.filter(environments__isnull=False)
            .filter(Q(state=PullRequest.State.OPEN) | Q(environments__state_changed_at__gte=recent))
            .distinct()
            .prefetch_related(
                Prefetch("environments", queryset=Environment.objects.order_by("flavor"))
            )
        )
        for pr in pulls:
            pr.repository = repository
            try:
                _publish_pr(repository, pr, counts)
            except Transient:
                raise
            except GatewayError as exc:  # e.g. the token may not comment: say so, go on
                counts["errors"] += 1
                log.warning("feedback on %s#%s failed: %s", repository.full_name, pr.number, exc)
    return counts


def _publish_pr(repository: Repository, pr: PullRequest, counts: dict[str, int]) -> None:
    envs = list(pr.environments.all())
    for env in envs:
        env.pull_request = pr
    api, token = repository.api_url, settings.GITHUB_TOKEN
    owner, name = repository.owner, repository.name
    if pr.state == PullRequest.State.OPEN or pr.feedback_comment_id:
        body = comment_body(pr, envs)
        digest = hashlib.sha256(body.encode()).hexdigest()
        if digest != pr.feedback_digest:
            comment_id = pr.feedback_comment_id
            if comment_id is None:
                # Written before but its id lost (a crash between the two): edit that one.
                comment_id = github_gateway.find_comment(api, token, owner, name, pr.number, MARKER)
            if comment_id is None or not github_gateway.edit_comment(
                api, token, owner, name, comment_id, body
            ):
                comment_id = github_gateway.create_comment(api, token, owner, name, pr.number, body)
            PullRequest.objects.filter(pk=pr.pk).update(
                feedback_comment_id=comment_id, feedback_digest=digest
            )
            counts["comments"] += 1
    for env in envs:
        _deployment(api, token, owner, name, pr, env, counts)


def _deployment(
    api: str, token: str, owner: str, name: str, pr: PullRequest, env: Environment,
    counts: dict[str, int],
) -> None:  # fmt: skip
    state = DEPLOYMENT_STATE.get(env.state, "")
    if not state or (env.deployment_id is None and state == "inactive"):
        return  # nothing was ever deployed: no Deployment to end
    fields: dict[str, Any] = {}
    if state != "inactive" and (env.deployment_id is None or env.deployment_sha != pr.head_sha):
        if env.deployment_id is not None and env.deployment_state != "inactive":
            github_gateway.create_deployment_status(
                api, token, owner, name, env.deployment_id, "inactive", "superseded by a push"
            )
        env.deployment_id = github_gateway.create_deployment(
            api, token, owner, name, pr.head_sha, f"pr-{pr.number}-{env.flavor}",
            f"{env.flavor} environment of #{pr.number}",
        )  # fmt: skip
        env.deployment_state = ""
        # Saved at once: a failed status post below must not create a second Deployment.
        Environment.objects.filter(pk=env.pk).update(
            deployment_id=env.deployment_id, deployment_sha=pr.head_sha, deployment_state=""
        )
        counts["deployments"] += 1
    if state != env.deployment_state:
        assert env.deployment_id is not None
        github_gateway.create_deployment_status(
            api, token, owner, name, env.deployment_id, state, env.reason or env.state,
            environment_url=env.url if state == "success" else "",
            log_url=portal_link(env),
        )  # fmt: skip
        fields["deployment_state"] = state
        counts["statuses"] += 1
        Event.objects.create(
            environment=env, pull_request=pr, kind="github",
            message=f"GitHub deployment `pr-{pr.number}-{env.flavor}`: {state}",
        )  # fmt: skip
    if fields:
        Environment.objects.filter(pk=env.pk).update(**fields)
