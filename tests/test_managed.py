"""Managed mode: envportal answers Argo CD's Plugin generator, so destroy sticks and a GitHub
outage never empties the list.

alice is platform; the managed repository is acme/checkout (the chart's example
ApplicationSets, as the sandbox demo installs them)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User

from environments import lifecycle, sync
from environments.models import Environment, PullRequest, Repository
from sandbox.controllers import APPLICATIONS, APPLICATIONSETS
from sandbox.scenarios import install_managed

URL = "/api/v1/getparams.execute"
TOKEN = "plugin-token-for-tests-0123456789"
SHA = "c" * 40


def call(client, body, token: str = TOKEN):
    return client.post(
        URL, json.dumps(body), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip


def ask(repository: str, **parameters) -> dict:
    return {"applicationSetName": "x", "input": {"parameters": {"repository": repository,
                                                                 **parameters}}}  # fmt: skip


@pytest.fixture
def checkout(db, settings) -> Repository:
    settings.ARGOCD_PLUGIN_TOKEN = TOKEN
    from django.utils import timezone

    repo = Repository.objects.create(
        owner="acme", name="checkout", managed_flavors=["namespace", "vcluster"],
        pulls_synced_at=timezone.now(),
    )  # fmt: skip
    for number, branch, labels, draft in [
        (1, "Feature/Gift_Cards", ["preview"], False),
        (2, "wip", [], True),
        (3, "gone", [], False),
    ]:
        PullRequest.objects.create(
            repository=repo, number=number, title=f"PR {number}", author="omar", branch=branch,
            head_sha=SHA, labels=labels, draft=draft,
            state="closed" if branch == "gone" else "open",
        )  # fmt: skip
    return repo


def test_it_answers_the_pull_request_generators_keys(client, checkout):
    response = call(client, ask("acme/checkout"))
    assert response.status_code == 200
    first, second = response.json()["output"]["parameters"]
    assert first == {
        "number": "1", "title": "PR 1", "branch": "Feature/Gift_Cards",
        "branch_slug": "feature-gift-cards", "target_branch": "main",
        "target_branch_slug": "main", "head_sha": SHA, "head_short_sha": SHA[:8],
        "head_short_sha_7": SHA[:7], "author": "omar", "labels": ["preview"],
    }  # fmt: skip
    assert second["number"] == "2"  # drafts are in, as with the Pull Request generator


def test_it_filters_by_label_and_drafts_and_leaves_out_held_environments(client, checkout):
    def numbers(**p):
        return [
            x["number"]
            for x in call(client, ask("acme/checkout", **p)).json()["output"]["parameters"]
        ]

    assert numbers(label="preview") == ["1"]
    assert numbers(include_drafts="false") == ["1"]
    pr = checkout.pulls.get(number=1)
    Environment.objects.create(pull_request=pr, flavor="namespace", state="destroyed", held=True)
    assert numbers(flavor="namespace") == ["2"]
    assert numbers(flavor="vcluster") == ["1", "2"]  # the other flavour is not destroyed


@pytest.mark.parametrize(
    ("body", "token", "status", "says"),
    [
        (ask("acme/checkout"), "wrong", 401, "bearer token"),
        ("not json", TOKEN, 400, "not valid JSON"),
        ({"input": {"parameters": {}}}, TOKEN, 400, "owner/name"),
        (ask("acme/checkout", flavor="docker"), TOKEN, 400, "flavor"),
        (ask("acme/unknown"), TOKEN, 404, "does not know acme/unknown"),
    ],
)
def test_bad_calls_get_a_clear_error(client, checkout, body, token, status, says):
    if body == "not json":
        response = client.post(URL, "{nope", content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    else:
        response = call(client, body, token)
    assert response.status_code == status
    assert says in response.json()["error"]


def test_a_repository_never_read_from_github_is_an_error_not_an_empty_list(client, checkout):
    # an empty answer would make Argo CD delete every Application of the ApplicationSet
    Repository.objects.filter(pk=checkout.pk).update(pulls_synced_at=None)
    response = call(client, ask("acme/checkout"))
    assert response.status_code == 503 and "not read" in response.json()["error"]


def test_the_quota_never_evicts_an_admitted_environment_whatever_its_state(client, checkout):
    from environments import plugin

    checkout.max_environments = 1
    checkout.save()
    Environment.objects.create(pull_request=checkout.pulls.get(number=2), flavor="namespace",
                               state="invalid")  # fmt: skip
    admitted, _ = plugin.queue(checkout, "namespace")
    assert [p.number for p in admitted] == [2]


def test_without_a_configured_token_it_refuses(client, checkout, settings):
    settings.ARGOCD_PLUGIN_TOKEN = ""
    response = call(client, ask("acme/checkout"), token="")
    assert response.status_code == 503 and "ARGOCD_PLUGIN_TOKEN" in response.json()["error"]


# --- On the sandbox: Argo CD's Plugin generator calling the live portal ---------------------


@pytest.fixture
def managed(world, live_server, settings, transactional_db):
    settings.ARGOCD_PLUGIN_TOKEN = world.plugin_token
    world.github.add_repo("acme", "checkout")
    install_managed(world, "acme/checkout", live_server.url)
    alice = User.objects.create_user("alice", password="alice-password-1", is_staff=True)
    alice.groups.set([Group.objects.get(name="platform")])
    return world


def checkout_apps(world) -> set[str]:
    return {
        a["metadata"]["name"]
        for a in world.cluster.list_objects(APPLICATIONS, "argocd")
        if a["metadata"]["name"].startswith(("pr-", "vc-"))
    }


def reconcile(world, times: int = 1) -> None:
    for _ in range(times):
        world.appsets.next_due.clear()  # as if requeueAfterSeconds had passed
        world.settle(0.3)


def test_a_managed_destroy_sticks_across_reconciles_and_recreate_brings_it_back(managed):
    world = managed
    world.github.open_pr("acme", "checkout", "Feature/Gift_Cards", "Gift cards", "omar")
    sync.sync_all()
    reconcile(world)
    assert checkout_apps(world) == {
        "pr-1-feature-gift-cards-ns", "vc-1-feature-gift-cards", "pr-1-feature-gift-cards-vc-app",
    }  # fmt: skip
    sync.sync_cluster()
    repo = Repository.objects.get(name="checkout")
    assert repo.managed_flavors == ["namespace", "vcluster"]
    env = Environment.objects.get(pull_request__repository=repo, flavor="namespace")
    assert env.state in ("provisioning", "ready"), env.reason

    action = lifecycle.request_action(User.objects.get(username="alice"), env, "destroy", {})
    assert lifecycle.execute(action.pk).startswith("left out of the plugin generator's answer")
    reconcile(world, times=3)
    assert checkout_apps(world) == {"vc-1-feature-gift-cards", "pr-1-feature-gift-cards-vc-app"}
    sync.sync_all()
    env.refresh_from_db()
    assert (env.state, env.held) == ("destroyed", True)
    other = Environment.objects.get(pull_request__repository=repo, flavor="vcluster")
    assert other.state != "destroyed"  # the vcluster environment of the same PR stays

    action = lifecycle.request_action(User.objects.get(username="alice"), env, "recreate", {})
    lifecycle.execute(action.pk)
    reconcile(world)
    assert "pr-1-feature-gift-cards-ns" in checkout_apps(world)
    sync.sync_cluster()
    env.refresh_from_db()
    assert env.state in ("pending", "provisioning", "ready") and not env.held


def test_github_failing_never_empties_a_managed_repository(managed):
    world = managed
    for branch in ("one", "two"):
        world.github.open_pr("acme", "checkout", branch, branch.title(), "omar")
    sync.sync_all()
    reconcile(world)
    before = checkout_apps(world)
    assert len(before) == 6
    world.github.set_faults(error_rate=1.0)  # every GitHub call fails from now on
    sync.sync_pull_requests()
    reconcile(world, times=3)
    assert checkout_apps(world) == before
    appset = world.cluster.get(APPLICATIONSETS, "argocd", "checkout-previews-ns")
    error = next(c for c in appset["status"]["conditions"] if c["type"] == "ErrorOccurred")
    assert error["status"] == "False"  # envportal kept answering from what it knows


# --- The write API -------------------------------------------------------------------------


def api_action(client, env: Environment, kind: str, body=None, **headers):
    pr = env.pull_request
    path = f"/api/v1/environments/{pr.repository.owner}/{pr.repository.name}/{pr.number}/{env.flavor}/{kind}/"
    return client.post(path, json.dumps(body or {}), content_type="application/json", **headers)


@pytest.fixture
def tokens(checkout):
    from environments.models import ApiToken

    made = {}
    for name, group in [("tess", "tester"), ("vera", "viewer")]:
        user = User.objects.create_user(name, password=f"{name}-password-1")
        user.groups.set([Group.objects.get(name=group)])
        made[name] = ApiToken.issue(user, "ci")[1]
    return made


def test_the_write_api_acts_with_the_uis_permissions(client, checkout, tokens):
    env = Environment.objects.create(
        pull_request=checkout.pulls.get(number=1), flavor="namespace", state="ready"
    )
    tess = {"HTTP_AUTHORIZATION": f"Bearer {tokens['tess']}"}
    response = api_action(client, env, "extend", {"hours": 5}, **tess)
    assert response.status_code == 202
    assert response.json()["action"]["kind"] == "extend" and response.json()["expires_at"]
    assert api_action(client, env, "extend", {"hours": "x"}, **tess).status_code == 400
    denied = api_action(client, env, "destroy", **tess)
    assert denied.status_code == 403 and "may not destroy" in denied.json()["error"]
    vera = {"HTTP_AUTHORIZATION": f"Bearer {tokens['vera']}"}
    assert api_action(client, env, "extend", {"hours": 1}, **vera).status_code == 403
    assert api_action(client, env, "pin", **tess).status_code == 403
    assert api_action(client, env, "extend").status_code == 401
    unpin = api_action(client, env, "unpin", **tess)
    assert unpin.status_code == 403
    assert api_action(client, env, "fly", **tess).status_code == 400


def test_a_session_must_send_the_csrf_token(checkout):
    from django.test import Client

    env = Environment.objects.create(
        pull_request=checkout.pulls.get(number=1), flavor="namespace", state="ready"
    )
    user = User.objects.create_user("tess", password="tess-password-1")
    user.groups.set([Group.objects.get(name="tester")])
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = api_action(client, env, "extend", {"hours": 2})
    assert response.status_code == 403 and "CSRF" in response.json()["error"]


def test_an_ended_lease_expires_a_managed_environment_and_only_that_flavour(managed):
    from datetime import timedelta

    from django.utils import timezone

    world = managed
    world.github.open_pr("acme", "checkout", "promo", "Promo", "omar")
    sync.sync_all()
    reconcile(world)
    sync.sync_cluster()
    env = Environment.objects.get(flavor="namespace", pull_request__repository__name="checkout")
    Environment.objects.filter(pk=env.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert lifecycle.expire_due()["expired"] == 1
    action = env.actions.get()
    lifecycle.execute(action.pk)
    reconcile(world, times=2)
    assert checkout_apps(world) == {"vc-1-promo", "pr-1-promo-vc-app"}
    sync.sync_cluster()
    env.refresh_from_db()
    assert env.state == "expired", env.reason
    sync.sync_cluster()  # and it stays expired
    assert Environment.objects.get(pk=env.pk).state == "expired"


def test_running_environments_keep_their_place_within_the_quota(client, checkout):
    from environments import plugin

    checkout.max_environments = 1
    checkout.save()
    PullRequest.objects.filter(number=3).update(state="open")
    admitted, waiting = plugin.queue(checkout, "namespace")
    assert [p.number for p in admitted] == [1] and [p.number for p in waiting] == [2, 3]
    Environment.objects.create(pull_request=checkout.pulls.get(number=3), flavor="namespace",
                               state="ready")  # fmt: skip
    numbers = [p["number"] for p in call(client, ask("acme/checkout", flavor="namespace"))
               .json()["output"]["parameters"]]  # fmt: skip
    assert numbers == ["3"]  # a running one is never evicted by an older PR


def test_prs_beyond_the_quota_wait_in_a_visible_queue(managed):
    world = managed
    world.github.open_pr("acme", "checkout", "first", "First", "omar")
    sync.sync_all()
    Repository.objects.filter(name="checkout").update(max_environments=1)
    world.github.open_pr("acme", "checkout", "second", "Second", "sofia")
    sync.sync_all()
    reconcile(world)
    assert {a for a in checkout_apps(world) if a.endswith("-ns")} == {"pr-1-first-ns"}
    sync.sync_cluster()
    second = Environment.objects.get(pull_request__number=2, flavor="namespace")
    assert second.state == "pending" and "waiting in the queue (1 of 1)" in second.reason
    from datetime import timedelta

    from django.utils import timezone

    Environment.objects.filter(pk=second.pk).update(expires_at=timezone.now())  # queued long
    world.github.close("acme", "checkout", 1)
    sync.sync_all()
    reconcile(world)
    assert "pr-2-second-ns" in checkout_apps(world)
    sync.sync_cluster()
    second.refresh_from_db()
    assert second.expires_at is not None
    assert second.expires_at > timezone.now() + timedelta(hours=71)  # the lease starts now


def test_done_when_a_managed_vcluster_destroyed_through_the_api_is_gone_and_said_so(
    managed, settings
):
    from django.test import Client

    from environments import cleanup, feedback, secret_sync
    from environments.models import ApiToken
    from sandbox.controllers import NAMESPACES, SECRETS

    world = managed
    world.github.open_pr("acme", "checkout", "wallet", "Wallet", "omar")
    sync.sync_all()
    reconcile(world)
    world.settle(1.0)
    sync.sync_cluster()
    secret_sync.sync_cluster_secrets()
    reconcile(world)
    world.settle(1.0)
    sync.sync_cluster()
    env = Environment.objects.get(flavor="vcluster", pull_request__repository__name="checkout")
    assert env.state == "ready", env.reason
    feedback.publish()
    managed_secrets = lambda: world.cluster.list_objects(  # noqa: E731
        SECRETS, "argocd", "app.kubernetes.io/managed-by=envportal"
    )
    assert len(managed_secrets()) == 1

    _, token = ApiToken.issue(User.objects.get(username="alice"), "ci")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    base = "/api/v1/environments/acme/checkout/1/vcluster/"
    response = api.post(base + "destroy/", "{}", content_type="application/json")
    assert response.status_code == 202 and response.json()["state"] == "destroying"
    lifecycle.execute(response.json()["action"]["id"])
    reconcile(world, times=3)  # several reconciles: nothing comes back
    assert checkout_apps(world) == {"pr-1-wallet-ns"}
    sync.sync_all()
    secret_sync.sync_cluster_secrets()
    assert managed_secrets() == []
    assert cleanup.clean_leftovers()["deleted"] == 1
    world.settle(0.3)
    names = {n["metadata"]["name"] for n in world.cluster.list_objects(NAMESPACES, "")}
    assert "pr-1-wallet-vc" not in names and "pr-1-wallet-ns" in names
    feedback.publish()
    deployments = {d["environment"]: d for d in world.github.list_deployments("acme", "checkout")}
    assert deployments["pr-1-vcluster"]["statuses"][0]["state"] == "inactive"
    from github import Auth, Github

    gh = Github(base_url=world.github_url, auth=Auth.Token(world.github_token))
    (comment,) = gh.get_repo("acme/checkout").get_issue(1).get_comments()
    assert "| vcluster | **destroyed**" in comment.body

    response = api.post(base + "recreate/", "{}", content_type="application/json")
    assert response.status_code == 202
    lifecycle.execute(response.json()["action"]["id"])
    reconcile(world)
    assert "vc-1-wallet" in checkout_apps(world)
