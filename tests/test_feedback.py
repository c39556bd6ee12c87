"""Feedback on GitHub through PyGithub and the sandbox: one sticky comment per PR, edited in
place, and a GitHub Deployment per environment whose statuses follow its state."""

from __future__ import annotations

import pytest
from github import Auth, Github

from environments import feedback, sync
from environments.models import Environment, PullRequest, Repository, SyncStatus

pytestmark = pytest.mark.django_db
SEED = ("a1tan", "app-ephemeraltest")


def comments(world, number: int) -> list[str]:
    gh = Github(base_url=world.github_url, auth=Auth.Token(world.github_token))
    return [c.body for c in gh.get_repo("/".join(SEED)).get_issue(number).get_comments()]


def deployments(world) -> dict[str, list[str]]:
    """environment → its statuses, oldest first (of the newest deployment)."""
    found: dict[str, list[str]] = {}
    for d in world.github.list_deployments(*SEED):
        found.setdefault(d["environment"], [s["state"] for s in reversed(d["statuses"])])
    return found


def test_one_comment_edited_in_place_and_deployments_in_order(world, settings):
    settings.PORTAL_URL = "https://envportal.example.com"
    world.github.open_pr(*SEED, "payments", "Payments", "amara")
    sync.sync_all()
    first = feedback.publish()
    assert first["comments"] == 1 and first["deployments"] == 2
    (body,) = comments(world, 1)
    assert "**pending**" in body
    assert "https://envportal.example.com/environments/a1tan/app-ephemeraltest/1/namespace/" in body
    assert feedback.publish() == {
        "comments": 0, "statuses": 0, "deployments": 0, "skipped": 0, "errors": 0,
    }  # fmt: skip  # nothing changed: no call at all

    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    assert Environment.objects.get(flavor="namespace").state == "ready"
    feedback.publish()
    (body,) = comments(world, 1)  # still one comment, now saying ready
    assert "| namespace | **ready**" in body
    ns = deployments(world)["pr-1-namespace"]
    assert ns[0] == "queued" and ns[-1] == "success"
    (deployment,) = [
        d for d in world.github.list_deployments(*SEED) if d["environment"] == "pr-1-namespace"
    ]
    assert deployment["transient_environment"] is True and deployment["auto_merge"] is False
    assert deployment["required_contexts"] == []
    assert deployment["statuses"][0]["environment_url"]

    world.github.close(*SEED, 1)
    sync.sync_pull_requests()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.6)
    sync.sync_cluster()
    feedback.publish()
    assert deployments(world)["pr-1-namespace"][-1] == "inactive"
    assert len(comments(world, 1)) == 1 and "**destroyed**" in comments(world, 1)[0]


def test_a_push_starts_a_new_deployment_and_ends_the_old_one(world):
    world.github.open_pr(*SEED, "search", "Search", "priya")
    sync.sync_all()
    feedback.publish()
    world.github.push(*SEED, 1)
    sync.sync_pull_requests()
    sync.sync_cluster()
    feedback.publish()
    ns = [d for d in world.github.list_deployments(*SEED) if d["environment"] == "pr-1-namespace"]
    assert len(ns) == 2
    assert ns[1]["statuses"][0]["state"] == "inactive"  # the older one, superseded
    assert ns[0]["sha"] == PullRequest.objects.get().head_sha


def test_a_deleted_comment_is_recreated_and_a_low_budget_waits(world):
    world.github.open_pr(*SEED, "docs", "Docs", "tom")
    sync.sync_all()
    feedback.publish()
    gh = Github(base_url=world.github_url, auth=Auth.Token(world.github_token))
    for comment in gh.get_repo("/".join(SEED)).get_issue(1).get_comments():
        comment.delete()
    PullRequest.objects.update(feedback_digest="")  # something to say again
    feedback.publish()
    assert len(comments(world, 1)) == 1
    from datetime import timedelta

    from django.utils import timezone

    SyncStatus.objects.filter(key__startswith="github:").update(
        backoff_until=timezone.now() + timedelta(minutes=5)
    )
    PullRequest.objects.update(feedback_digest="")
    assert feedback.publish()["skipped"] == 1


def test_the_comment_escapes_what_comes_from_outside():
    from datetime import timedelta

    from django.utils import timezone

    repo = Repository(owner="acme", name="shop")
    pr = PullRequest(repository=repo, number=3, title="x", head_sha="a" * 40)
    env = Environment(
        pull_request=pr, flavor="namespace", state="ready",
        reason="a | b <script>alert(1)</script>\nnext", url="javascript:alert(1)",
        expires_at=timezone.now() + timedelta(minutes=30), expiry_warned="1h",
    )  # fmt: skip
    body = feedback.comment_body(pr, [env])
    assert "<script>" not in body and "javascript:" not in body and "a \\| b" in body
    assert "⚠ within 1 h" in body
    env.url = "https://x.example/(evil)"
    assert "https://x.example/%28evil%29" in feedback.comment_body(pr, [env])
