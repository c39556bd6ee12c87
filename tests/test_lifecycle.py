"""Leases: warnings before expiry, expiry through the destroy path, renewal by a push, a fresh
lease on reopen. alice is platform; acme/shop filters PRs by the `preview` label."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from environments import lifecycle, pulls
from environments.models import Action, Environment, Event, PullRequest, Repository

pytestmark = pytest.mark.django_db
HEAD = "a" * 40


@pytest.fixture
def shop() -> Repository:
    return Repository.objects.create(
        owner="acme", name="shop", applicationsets=["shop-previews"],
        label_filters={"namespace": "preview"}, default_ttl_hours=72, max_ttl_hours=100,
    )  # fmt: skip


def make_env(repo: Repository, number: int, expires_in: timedelta, **fields) -> Environment:
    pr = PullRequest.objects.create(
        repository=repo, number=number, title=f"PR {number}", author="dave", branch=f"b-{number}",
        head_sha=HEAD, labels=["preview"],
    )  # fmt: skip
    values = {"state": "ready", "expires_at": timezone.now() + expires_in, **fields}
    return Environment.objects.create(pull_request=pr, flavor="namespace", **values)


def kinds(env: Environment) -> list[str]:
    return list(Event.objects.filter(environment=env).values_list("kind", flat=True))


def test_it_warns_24_h_then_1_h_before_once_each(shop):
    env = make_env(shop, 1, timedelta(hours=20))
    assert lifecycle.expire_due()["warned"] == 1
    assert lifecycle.expire_due()["warned"] == 0  # not twice
    now = timezone.now() + timedelta(hours=19, minutes=30)
    assert lifecycle.expire_due(now)["warned"] == 1
    assert lifecycle.expire_due(now)["warned"] == 0
    assert kinds(env).count("expiry-warning") == 2
    assert "within 1 h" in Event.objects.filter(kind="expiry-warning").latest("at").message


def test_a_due_lease_expires_through_the_destroy_path(shop, django_capture_on_commit_callbacks):
    env = make_env(shop, 2, timedelta(minutes=-1))
    pinned = make_env(shop, 3, timedelta(minutes=-1), pinned=True)
    with django_capture_on_commit_callbacks() as queued:
        assert lifecycle.expire_due()["expired"] == 1
    assert len(queued) == 1  # the worker's task, after commit
    assert lifecycle.expire_due()["expired"] == 0  # idempotent
    env.refresh_from_db()
    assert env.state == "destroying" and "lease ended" in env.reason
    (action,) = Action.objects.all()
    assert (action.kind, action.actor, action.state) == ("expire", "system", "pending")
    assert "expired" in kinds(env)
    pinned.refresh_from_db()
    assert pinned.state == "ready"
    assert lifecycle.expired_ids() == {env.pk}


def test_without_a_label_filter_it_cannot_expire_and_says_why_once(shop):
    shop.label_filters = {}
    shop.save()
    env = make_env(shop, 4, timedelta(minutes=-1))
    assert lifecycle.expire_due()["refused"] == 1
    assert lifecycle.expire_due()["refused"] == 0
    env.refresh_from_db()
    assert env.state == "ready"
    assert "select every open pull request" in Event.objects.get(kind="expiry-refused").message


def test_users_cannot_post_the_systems_expire(shop, alice):
    env = make_env(shop, 5, timedelta(hours=5))
    with pytest.raises(lifecycle.ActionError, match="unknown action"):
        lifecycle.request_action(alice, env, "expire", {})


def pull(pr: PullRequest, **changes) -> pulls.PullData:
    values = dict(
        number=pr.number, title=pr.title, author=pr.author, branch=pr.branch, base_branch="main",
        head_sha=pr.head_sha, labels=tuple(pr.labels), draft=False, state="open", html_url="",
        updated_at=None,
    )  # fmt: skip
    return pulls.PullData(**{**values, **changes})


def test_a_push_renews_the_lease_where_the_repository_says_so(shop):
    env = make_env(shop, 6, timedelta(hours=2))
    pulls.apply_pulls(shop, [pull(env.pull_request, head_sha="b" * 40)], complete=False)
    env.refresh_from_db()
    assert env.expires_at is not None and env.expires_at < timezone.now() + timedelta(hours=3)
    shop.renew_on_push = True
    shop.save()
    pulls.apply_pulls(shop, [pull(env.pull_request, head_sha="c" * 40)], complete=False)
    env.refresh_from_db()
    assert env.expires_at is not None
    assert env.expires_at > timezone.now() + timedelta(hours=71)
    assert "renewed" in kinds(env)


def test_a_reopened_pr_gets_a_fresh_lease(shop):
    env = make_env(shop, 7, timedelta(hours=-5), state="destroyed", held=True)
    pr = env.pull_request
    PullRequest.objects.filter(pk=pr.pk).update(state="closed")
    pr.refresh_from_db()
    pulls.apply_pulls(shop, [pull(pr)], complete=False)
    env.refresh_from_db()
    assert env.expires_at is not None
    assert env.expires_at > timezone.now() + timedelta(hours=71) and not env.held


def test_a_pinned_flavour_sharing_the_label_blocks_destroy_and_expiry_of_the_other(shop, alice):
    from django.contrib.auth.models import Group

    alice.groups.set([Group.objects.get(name="platform")])
    shop.label_filters = {"namespace": "preview", "vcluster": "preview"}
    shop.save()
    env = make_env(shop, 8, timedelta(minutes=-1))
    Environment.objects.create(pull_request=env.pull_request, flavor="vcluster", state="ready",
                               pinned=True)  # fmt: skip
    with pytest.raises(lifecycle.Refused, match="vcluster environment is pinned"):
        lifecycle.request_action(alice, env, "destroy", {})
    assert lifecycle.expire_due()["refused"] == 1
    env.refresh_from_db()
    assert env.state == "ready"
