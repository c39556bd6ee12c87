"""The sync engine against the sandbox, through PyGithub and the kubernetes client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from environments import sync
from environments.models import Environment, Event, PullRequest, Repository, SyncStatus
from sandbox.controllers import APPLICATIONS, SECRETS
from sandbox.world import World

pytestmark = pytest.mark.django_db
SEED = ("a1tan", "app-ephemeraltest")


def env(number: int, flavor: str) -> Environment:
    return Environment.objects.get(pull_request__number=number, flavor=flavor)


def cluster_secret(world: World, server: str) -> None:
    world.cluster.create(SECRETS, "argocd", {
        "metadata": {"generateName": "cluster-", "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
        "stringData": {"name": server, "server": server, "config": "{}"},
    })  # fmt: skip


def test_discovery_finds_the_seed_repository_from_its_applicationsets(world):
    sync.sync_cluster()
    repo = Repository.objects.get()
    assert (repo.owner, repo.name) == SEED
    assert repo.applicationsets == ["ephemeralcluster", "sampleapps", "sampleapps-ns"]
    assert repo.api_url == world.github_url


def test_a_new_pr_goes_pending_then_ready_in_both_flavours(world):
    pr = world.github.open_pr(*SEED, "login-page", "Login page", "maria")
    sync.sync_all()
    assert env(pr["number"], "namespace").state == "pending"
    assert env(pr["number"], "vcluster").state == "pending"
    assert "lists PRs every 120 s" in env(pr["number"], "namespace").reason
    sync.refresh_applicationsets(Repository.objects.get())
    world.tick()  # the ApplicationSet controller sees the refresh annotation at once
    sync.sync_cluster()
    assert env(pr["number"], "namespace").state == "provisioning"
    world.settle(1.0)
    sync.sync_cluster()
    assert env(pr["number"], "namespace").state == "ready"
    vcluster = env(pr["number"], "vcluster")
    assert vcluster.state == "provisioning"
    assert "waiting for the Argo CD cluster secret" in vcluster.reason
    cluster_secret(
        world, "https://cluster-login-page-1.cluster-login-page-1-namespace.svc.cluster.local"
    )
    world.settle(1.0)
    sync.sync_cluster()
    vcluster = env(pr["number"], "vcluster")
    assert vcluster.state == "ready", vcluster.reason
    assert vcluster.deployed_sha == pr["head"]["sha"]
    assert vcluster.namespace == "cluster-login-page-1-namespace"
    assert {a.role for a in vcluster.apps.all()} == {"app", "cluster"}
    kinds = list(Event.objects.filter(environment=vcluster).values_list("details__to", flat=True))
    assert kinds[::-1][:2] == ["pending", "provisioning"] and kinds[0] == "ready"


def test_an_invalid_branch_is_reported_before_argo_cd_fails(world):
    pr = world.github.open_pr(*SEED, "feature/login", "SSO", "lucas")
    sync.sync_all()  # the ApplicationSet controller has not run at all
    for flavor in ("namespace", "vcluster"):
        e = env(pr["number"], flavor)
        assert e.state == "invalid"
        assert "branch name `feature/login`" in e.reason and "{{branch_slug}}" in e.reason


def test_a_63_character_namespace_is_predicted_invalid(world):
    branch = "a-very-long-branch-name-that-overflows-the-namespace-limit"
    pr = world.github.open_pr(*SEED, branch, "Long", "tom")
    sync.sync_all()
    assert env(pr["number"], "namespace").state == "invalid"
    assert "at most 63" in env(pr["number"], "namespace").reason


def test_a_push_makes_it_out_of_date_then_ready_on_the_new_sha(world):
    pr = world.github.open_pr(*SEED, "search", "Search", "priya")
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    assert env(pr["number"], "namespace").state == "ready"
    sha = world.github.push(*SEED, pr["number"])
    sync.sync_pull_requests()
    sync.sync_cluster()
    e = env(pr["number"], "namespace")
    assert e.state == "out-of-date"
    assert e.reason == f"deployed {pr['head']['sha'][:7]}, PR head is {sha[:7]}"
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    e = env(pr["number"], "namespace")
    assert (e.state, e.deployed_sha) == ("ready", sha)


def test_a_closed_pr_is_destroying_then_destroyed(world):
    pr = world.github.open_pr(*SEED, "payments", "Payments", "amara")
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.5)
    sync.sync_cluster()
    world.github.close(*SEED, pr["number"])
    sync.sync_pull_requests()
    assert PullRequest.objects.get(number=pr["number"]).state == "closed"
    sync.sync_cluster()
    assert env(pr["number"], "namespace").state == "destroying"
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.5)
    sync.sync_cluster()
    assert env(pr["number"], "namespace").state == "destroyed"
    assert not world.cluster.list_objects(APPLICATIONS, "argocd")


def test_another_prs_invalid_name_keeps_a_closed_pr_destroying_with_the_reason(world):
    pr = world.github.open_pr(*SEED, "payments", "Payments", "amara")
    bad = world.github.open_pr(*SEED, "feature/login", "SSO", "lucas")
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.5)
    world.github.close(*SEED, pr["number"])
    sync.sync_pull_requests()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(0.5)
    sync.sync_cluster()
    closed = env(pr["number"], "namespace")
    assert closed.state == "destroying"
    assert "while ApplicationSet `sampleapps-ns` has an error" in closed.reason
    world.github.close(*SEED, bad["number"])
    sync.sync_pull_requests()
    # The failed reconciles kept the refresh annotation, so setting it again is no event:
    # Argo CD retries on its backoff.
    world.appsets.next_due.clear()
    world.settle(0.5)
    sync.sync_cluster()
    assert env(pr["number"], "namespace").state == "destroyed"


def test_an_unchanged_resync_costs_only_free_304s(world):
    for i in range(3):
        world.github.open_pr(*SEED, f"pr-{i}", f"PR {i}", "maria")
    sync.sync_all()
    key = sync.github_key(world.github_url)
    before = SyncStatus.objects.get(key=key).details["remaining"]
    summary = sync.sync_pull_requests()
    assert summary["requests"] == summary["not_modified"] == 1
    assert SyncStatus.objects.get(key=key).details["remaining"] == before
    assert world.github.stats["not_modified"] == 1


@pytest.mark.parametrize("prs", [3, 40])
def test_request_counts_do_not_grow_with_the_number_of_prs(world, prs):
    for i in range(prs):
        world.github.open_pr(*SEED, f"branch-{i}", f"PR {i}", "maria")
    sync.sync_all()
    world.kube.reset_stats()
    sync.sync_cluster()
    lists = {k: v for k, v in world.kube.stats.items() if k.startswith("list ")}
    assert sum(lists.values()) == 5, lists
    assert world.kube.stats["get"] == 0
    summary = sync.sync_pull_requests()
    assert summary["requests"] == 1  # one repository, one page


def test_rate_limit_exhaustion_backs_off_and_recovers(world):
    world.github.open_pr(*SEED, "a", "A", "maria")
    sync.sync_cluster()  # discovers the repository
    world.github.set_faults(exhausted=True)
    summary = sync.sync_pull_requests()
    assert summary["errors"] and "rate limit" in summary["errors"][0]
    status = SyncStatus.objects.get(key=sync.github_key(world.github_url))
    assert status.backoff_until and status.backoff_until > timezone.now()
    requests = world.github.stats["requests"]
    assert "waiting until" in sync.sync_pull_requests()["errors"][0]
    assert world.github.stats["requests"] == requests  # backing off: no request at all
    world.github.set_faults(exhausted=False)
    SyncStatus.objects.filter(pk=status.pk).update(
        backoff_until=timezone.now() - timedelta(seconds=1)
    )
    assert sync.sync_pull_requests()["errors"] == []
    assert PullRequest.objects.filter(state="open").count() == 1


def test_a_kubernetes_outage_keeps_the_last_known_state_and_destroys_nothing(world):
    pr = world.github.open_pr(*SEED, "stable", "Stable", "maria")
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    assert env(pr["number"], "namespace").state == "ready"
    world.set_kube_faults(error_rate=1.0, modes=("500",))
    result = sync.sync_cluster()
    assert "error" in result
    assert env(pr["number"], "namespace").state == "ready"
    status = SyncStatus.objects.get(key=sync.KUBERNETES)
    assert status.last_error and status.is_stale(timedelta(minutes=5))
    world.set_kube_faults()
    sync.sync_cluster()
    assert SyncStatus.objects.get(key=sync.KUBERNETES).last_error == ""


def test_github_down_keeps_prs_open(world):
    world.github.open_pr(*SEED, "x", "X", "maria")
    sync.sync_all()
    world.github.set_faults(error_rate=1.0)
    summary = sync.sync_pull_requests()
    assert summary["errors"]
    assert PullRequest.objects.filter(state="open").count() == 1


def test_done_when_the_api_lists_both_flavours_and_wait_for_environment_succeeds(
    world, client, bob
):
    from django.core.management import call_command

    from environments.models import ApiToken

    healthy = world.github.open_pr(*SEED, "login-page", "Login", "maria")
    broken = world.github.open_pr(*SEED, "feature/login", "SSO", "lucas")
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    _, token = ApiToken.issue(bob)
    body = client.get("/api/v1/environments/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    rows = {(r["number"], r["flavor"]): r for r in body["results"]}
    assert {flavor for _, flavor in rows} == {"namespace", "vcluster"}
    invalid = rows[(broken["number"], "namespace")]
    assert invalid["state"] == "invalid" and "feature/login" in invalid["reason"]
    assert rows[(healthy["number"], "namespace")]["repository"] == "a1tan/app-ephemeraltest"
    call_command(
        "wait_for_environment", "a1tan/app-ephemeraltest", str(healthy["number"]),
        "--flavor", "namespace", "--timeout", "5", "--interval", "0.2",
    )  # fmt: skip


def test_a_resync_with_nothing_changed_writes_nothing(world, django_assert_max_num_queries):
    for i in range(5):
        world.github.open_pr(*SEED, f"quiet-{i}", f"Quiet {i}", "maria")
    sync.sync_all()
    sync.refresh_applicationsets(Repository.objects.get())
    world.settle(1.0)
    sync.sync_cluster()
    events = Event.objects.count()
    assert sync.sync_cluster()["changed"] == 0
    assert Event.objects.count() == events


def test_the_home_page_shows_states_and_the_github_budget(world, bob_client):
    world.github.open_pr(*SEED, "feature/login", "SSO", "lucas")
    sync.sync_all()
    html = bob_client.get("/").content.decode()
    assert "invalid" in html and "feature/login" in html
    assert "/5000 requests left" in html
