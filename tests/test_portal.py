"""The portal: dashboard, environment page, actions and the permission model around them.

alice is platform (staff), bob a tester, dave a tester whose GitHub login is `dave-gh` (the
author of PR 7), victor a viewer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from environments import lifecycle, sync
from environments.models import Action, Environment, Event, Profile, PullRequest, Repository
from sandbox.controllers import APPLICATIONS, APPLICATIONSETS
from sandbox.scenarios import storefront_applicationset

pytestmark = pytest.mark.django_db
HEAD = "a" * 40


def login(name: str, group: str, github_login: str = "", **flags: bool) -> Client:
    user = User.objects.create_user(name, password=f"{name}-password-1", **flags)
    user.groups.set([Group.objects.get(name=group)])
    if github_login:
        Profile.objects.create(user=user, github_login=github_login)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def platform() -> Client:
    return login("alice", "platform", is_staff=True)


@pytest.fixture
def tester() -> Client:
    return login("bob", "tester")


@pytest.fixture
def author() -> Client:
    return login("dave", "tester", github_login="Dave-GH")


@pytest.fixture
def viewer() -> Client:
    return login("victor", "viewer")


@pytest.fixture
def shop() -> Repository:
    return Repository.objects.create(
        owner="acme",
        name="shop",
        applicationsets=["shop-previews"],
        label_filters={"namespace": "preview"},
        default_ttl_hours=72,
        max_ttl_hours=100,
    )


def make_env(repo: Repository, number: int, author: str = "dave-gh", **fields) -> Environment:
    pr = PullRequest.objects.create(
        repository=repo,
        number=number,
        title=f"PR {number}",
        author=author,
        branch=f"feature-{number}",
        head_sha=HEAD,
        labels=["preview"],
    )
    values = {
        "state": "ready",
        "deployed_sha": HEAD,
        "expires_at": timezone.now() + timedelta(hours=72),
        **fields,
    }
    return Environment.objects.create(pull_request=pr, flavor="namespace", **values)


def url(env: Environment, action: str = "") -> str:
    pr = env.pull_request
    base = f"/environments/{pr.repository.owner}/{pr.repository.name}/{pr.number}/{env.flavor}/"
    return base + (f"{action}/" if action else "")


def buttons(html: str, env: Environment) -> set[str]:
    return {k for k in ("extend", "redeploy", "pin", "destroy") if f'id="act-{env.pk}-{k}"' in html}


def test_every_page_but_probes_and_the_webhook_needs_a_login(client, shop):
    env = make_env(shop, 7)
    for path in ("/", url(env), url(env, "extend"), "/tokens/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path
    assert client.get("/healthz").status_code == 200


def test_each_role_sees_only_the_actions_it_may_take(platform, tester, author, viewer, shop):
    mine = make_env(shop, 7)
    theirs = make_env(shop, 8, author="someone-else")
    html = {name: c.get("/").content.decode() for name, c in
            [("platform", platform), ("tester", tester), ("author", author), ("viewer", viewer)]}  # fmt: skip
    assert buttons(html["platform"], theirs) == {"extend", "redeploy", "pin", "destroy"}
    assert buttons(html["tester"], theirs) == {"extend", "redeploy"}
    assert buttons(html["author"], mine) == {"extend", "redeploy", "destroy"}
    assert buttons(html["author"], theirs) == {"extend", "redeploy"}
    assert buttons(html["viewer"], mine) == set()


def test_a_forbidden_action_is_refused_with_403_and_changes_nothing(tester, viewer, shop):
    env = make_env(shop, 8, author="someone-else")
    assert tester.post(url(env, "destroy")).status_code == 403
    assert tester.post(url(env, "pin"), HTTP_HX_REQUEST="true").status_code == 403
    assert viewer.post(url(env, "extend")).status_code == 403
    env.refresh_from_db()
    assert (env.state, env.pinned) == ("ready", False)
    assert not Action.objects.exists()


def test_extend_moves_the_expiry_within_the_repository_maximum(tester, shop):
    env = make_env(shop, 7, expires_at=timezone.now() + timedelta(hours=10))
    response = tester.post(url(env, "extend"), {"hours": "24", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    env.refresh_from_db()
    assert env.expires_at is not None
    assert timedelta(hours=33) < env.expires_at - timezone.now() <= timedelta(hours=34)
    # 100 h is the maximum from now: +100 h is cut to it, with the reason
    response = tester.post(url(env, "extend"), {"hours": "100"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "capped at the repository&#x27;s maximum of 100 h" in response.content.decode()
    env.refresh_from_db()
    assert env.expires_at is not None
    assert timedelta(hours=99) < env.expires_at - timezone.now() <= timedelta(hours=100)
    response = tester.post(url(env, "extend"), {"hours": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#flash"
    assert "already expires at the repository" in response.content.decode()
    assert tester.post(url(env, "extend"), {"hours": "zero"}).status_code == 302  # message shown
    assert Event.objects.filter(kind="extended", actor="bob").count() == 2


def test_pin_takes_a_reason_and_unpin_restarts_the_lease(platform, shop):
    env = make_env(shop, 7, expires_at=timezone.now() + timedelta(minutes=5))
    platform.post(url(env, "pin"), HTTP_HX_REQUEST="true", HTTP_HX_PROMPT="Friday demo")
    env.refresh_from_db()
    assert env.pinned and env.pin_reason == "Friday demo"
    assert "pinned" in platform.get("/").content.decode()
    platform.post(url(env, "unpin"))
    env.refresh_from_db()
    assert not env.pinned and env.expires_at > timezone.now() + timedelta(hours=71)


def test_destroy_records_the_intent_and_queues_the_work_after_commit(
    platform, shop, django_capture_on_commit_callbacks, monkeypatch
):
    env = make_env(shop, 7)
    queued = []
    from environments import tasks

    monkeypatch.setattr(tasks.run_action, "delay", lambda pk: queued.append(pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = platform.post(url(env, "destroy"), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Destroying…" in response.content.decode()
    action = Action.objects.get()
    assert (action.kind, action.state, action.actor) == ("destroy", "pending", "alice")
    assert queued == [action.pk]
    # a double click is the same intent, not a second action
    with django_capture_on_commit_callbacks(execute=True):
        platform.post(url(env, "destroy"), HTTP_HX_REQUEST="true")
    assert Action.objects.count() == 1


def test_destroy_without_a_label_filter_is_refused_with_the_fix(platform):
    repo = Repository.objects.create(owner="a1tan", name="app", applicationsets=["sampleapps"])
    env = make_env(repo, 1)
    html = platform.get(url(env)).content.decode()
    assert "Destroy is not available" in html and "labels: [preview]" in html
    response = platform.post(url(env, "destroy"))
    assert response.status_code == 302
    assert "select every open pull request" in platform.get(url(env)).content.decode()


def test_destroy_without_javascript_goes_through_a_confirmation_page(author, shop):
    env = make_env(shop, 7)
    page = author.get(url(env, "destroy") + "?next=/").content.decode()
    assert "Destroy this environment?" in page and "acme/shop#7" in page
    assert 'name="next" value="/"' in page
    assert author.get(url(env, "destroy") + "?next=https://evil.example/").status_code == 200
    assert (
        "evil.example"
        not in author.get(url(env, "destroy") + "?next=https://evil.example/").content.decode()
    )


def test_filters_search_and_mine_are_kept_in_the_url(author, shop):
    make_env(shop, 7)
    make_env(shop, 8, author="someone-else", state="degraded")
    other = Repository.objects.create(owner="acme", name="api")
    make_env(other, 3, state="invalid")

    def numbers(query: str) -> set[int]:
        html = author.get("/?" + query).content.decode()
        return {n for n in (3, 7, 8) if f">#{n}</a>" in html}

    assert numbers("") == {3, 7, 8}
    assert numbers("repository=acme/shop") == {7, 8}
    assert numbers("state=degraded") == {8}
    assert numbers("mine=1") == {3, 7}
    assert numbers("q=%237") == {7}
    assert numbers("q=someone") == {8}
    assert numbers("flavor=vcluster") == set()
    html = author.get("/?state=invalid").content.decode()
    assert '<option value="invalid" selected>' in html
    partial = author.get("/?repository=acme/api", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="live")
    assert partial.content.decode().lstrip().startswith('<div id="live"')


@pytest.mark.parametrize("count", [1, 40])
def test_the_dashboard_query_count_does_not_grow_with_rows(
    platform, shop, count, django_assert_max_num_queries
):
    for number in range(1, count + 1):
        make_env(shop, number, author=f"dev{number}")
    # session, user, groups, profile, summary, page count, page rows, repositories, sync status
    with django_assert_max_num_queries(9):
        response = platform.get("/")
    assert response.content.decode().count('class="env ') == count


def test_the_environment_page_shows_apps_timeline_and_ci_lines(tester, shop, settings):
    settings.ARGOCD_URL = "https://argocd.example.com"
    env = make_env(shop, 7, url="https://pr-7.example.com")
    env.apps.create(name="shop-pr-7", sync="Synced", health="Healthy",
                    resources=[{"kind": "Deployment", "namespace": "pr-7", "name": "web",
                                "status": "Synced", "health": "Healthy"}])  # fmt: skip
    tester.post(url(env, "extend"), {"hours": "4"})
    html = tester.get(url(env)).content.decode()
    assert "https://argocd.example.com/applications/argocd/shop-pr-7" in html
    assert "Deployment/pr-7/web" in html
    assert "extended by 4 h by bob" in html
    assert "wait_for_environment acme/shop 7 --flavor namespace" in html
    assert "/api/v1/environments/acme/shop/7/namespace/" in html


def test_a_user_creates_and_revokes_an_api_token(tester):
    html = tester.post("/tokens/", {"name": "gitlab-ci"}).content.decode()
    assert "shown this once" in html and "envp_" in html
    listed = tester.get("/tokens/").content.decode()
    assert "gitlab-ci" in listed and "shown this once" not in listed
    token = User.objects.get(username="bob").api_tokens.get()
    tester.post("/tokens/", {"revoke": token.pk})
    assert not User.objects.get(username="bob").api_tokens.exists()


def test_the_admin_runs_actions_through_the_same_checks(platform, shop):
    env = make_env(shop, 7)
    response = platform.post(
        "/admin/environments/environment/",
        {"action": "extend_24h", "_selected_action": [env.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert Event.objects.filter(kind="extended", actor="alice").exists()
    for path in ("/admin/", "/admin/environments/event/", "/admin/environments/action/",
                 "/admin/auth/user/", f"/admin/environments/environment/{env.pk}/change/"):  # fmt: skip
        assert platform.get(path).status_code == 200, path
    assert "Sync status" in platform.get("/admin/").content.decode()


# --- On the sandbox: destroy and recreate by the ApplicationSet's label filter ---------------


def test_destroy_removes_the_label_and_recreate_adds_it_back(world, platform):
    world.github.add_repo("acme", "storefront")
    world.cluster.create(APPLICATIONSETS, "argocd", storefront_applicationset())
    world.github.open_pr("acme", "storefront", "feature/cart", "Cart", "sofia", labels=["preview"])
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get(name="storefront"))
    world.settle(0.6)
    sync.sync_cluster()
    env = Environment.objects.get(pull_request__repository__name="storefront")
    assert env.state == "ready", env.reason

    action = lifecycle.request_action(User.objects.get(username="alice"), env, "destroy", {})
    assert lifecycle.execute(action.pk).startswith("removed the `preview` label")
    assert lifecycle.execute(action.pk) == "nothing to do"  # a second delivery does nothing
    assert world.github.list_open("acme", "storefront")[0]["labels"] == []
    world.settle(0.6)
    sync.sync_cluster()
    env.refresh_from_db()
    assert env.state == "destroyed"
    assert not world.cluster.list_objects(APPLICATIONS, "argocd")
    sync.sync_all()  # the PR sync agrees: no label, so nothing comes back
    world.settle(0.6)
    sync.sync_cluster()
    assert Environment.objects.get(pk=env.pk).state == "destroyed"

    action = lifecycle.request_action(User.objects.get(username="alice"), env, "recreate", {})
    lifecycle.execute(action.pk)
    world.settle(0.6)
    sync.sync_cluster()
    env.refresh_from_db()
    assert env.state == "ready", env.reason
    kinds = list(Event.objects.filter(environment=env).values_list("kind", flat=True))
    assert "destroy" in kinds and "recreate" in kinds


def test_a_worker_killed_mid_destroy_is_resumed(world, platform):
    world.github.add_repo("acme", "storefront")
    world.cluster.create(APPLICATIONSETS, "argocd", storefront_applicationset())
    world.github.open_pr("acme", "storefront", "fix", "Fix", "sofia", labels=["preview"])
    sync.sync_all()
    env = Environment.objects.get()
    action = lifecycle.request_action(User.objects.get(username="alice"), env, "destroy", {})
    # the worker claimed it and died before finishing: the row says running
    Action.objects.filter(pk=action.pk).update(
        state="running",
        created_at=timezone.now() - timedelta(minutes=10),
        claimed_at=timezone.now() - timedelta(minutes=10),
    )
    assert lifecycle.unfinished() == [action.pk]
    lifecycle.execute(action.pk)
    action.refresh_from_db()
    assert (action.state, action.attempts) == ("done", 1)
    sync.sync_cluster()  # meanwhile the environment stays `destroying`, never back to ready
    assert Environment.objects.get().state in ("destroying", "destroyed")


def test_a_running_action_is_not_taken_by_a_second_worker(world, platform):
    world.github.add_repo("acme", "storefront")
    world.cluster.create(APPLICATIONSETS, "argocd", storefront_applicationset())
    world.github.open_pr("acme", "storefront", "fix", "Fix", "sofia", labels=["preview"])
    sync.sync_all()
    env = Environment.objects.get()
    action = lifecycle.request_action(User.objects.get(username="alice"), env, "destroy", {})
    Action.objects.filter(pk=action.pk).update(state="running", claimed_at=timezone.now())
    assert lifecycle.execute(action.pk) == "nothing to do"  # its worker is still on it
    assert lifecycle.unfinished(older_than=timedelta(0)) == []


def test_a_deploy_behind_the_head_says_how_many_pushes_behind(tester, shop):
    from environments import pulls

    env = make_env(shop, 9)
    pr = env.pull_request
    for sha in ("b" * 40, "c" * 40):
        data = pulls.PullData(
            number=9, title=pr.title, author=pr.author, branch=pr.branch, base_branch="main",
            head_sha=sha, labels=("preview",), draft=False, state="open", html_url="",
            updated_at=None,
        )  # fmt: skip
        pulls.apply_pulls(shop, [data], complete=False)
    pr.refresh_from_db()
    assert pr.head_history == ["b" * 40, HEAD]
    html = tester.get("/").content.decode()
    assert "2 pushes behind (aaaaaaa)" in html
