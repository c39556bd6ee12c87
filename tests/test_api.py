from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from environments.models import (
    ApiToken,
    Environment,
    EnvironmentApp,
    PullRequest,
    Repository,
    SyncStatus,
)

LIST_URL = "/api/v1/environments/"
HEAD = "c" * 40


def make_pull(repository: Repository, number: int, state: str = "open") -> PullRequest:
    return PullRequest.objects.create(
        repository=repository,
        number=number,
        title=f"PR {number}",
        author="carol",
        branch=f"feature/{number}",
        head_sha=HEAD,
        state=state,
        html_url=f"https://github.com/{repository.full_name}/pull/{number}",
    )


def make_env(pull: PullRequest, flavor: str = "namespace", **fields) -> Environment:
    env = Environment.objects.create(
        pull_request=pull,
        flavor=flavor,
        namespace=f"pr-{pull.number}",
        url=f"https://pr-{pull.number}.preview.example.com",
        **fields,
    )
    EnvironmentApp.objects.create(
        environment=env, name=f"shop-pr-{pull.number}", applicationset="shop-previews"
    )
    return env


@pytest.fixture
def shop(db) -> Repository:
    return Repository.objects.create(owner="acme", name="shop")


@pytest.fixture
def ready_env(shop) -> Environment:
    pull = make_pull(shop, 12)
    env = make_env(
        pull,
        state=Environment.State.READY,
        reason="all applications healthy",
        health="Healthy",
        sync="Synced",
        deployed_sha=HEAD,
        expires_at=timezone.now() + timedelta(hours=72),
        last_seen_at=timezone.now(),
    )
    EnvironmentApp.objects.create(
        environment=env,
        name="shop-pr-12-cluster",
        role=EnvironmentApp.Role.CLUSTER,
        conditions=[{"type": "SyncError", "message": "boom"}],
    )
    return env


@pytest.fixture
def token(bob) -> str:
    return ApiToken.issue(bob, name="CI")[1]


def bearer(raw: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {raw}"})


def test_it_requires_authentication(client, ready_env):
    response = client.get(LIST_URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "error" in response.json()


def test_it_refuses_a_wrong_bearer_token(ready_env, token):
    for header in ("Bearer envp_wrong", "Bearer ", "Basic Ym9iOmJvYg==", token):
        response = Client(headers={"Authorization": header}).get(LIST_URL)
        assert response.status_code == 401, header


def test_it_refuses_the_token_of_an_inactive_user(ready_env, token, bob):
    bob.is_active = False
    bob.save()
    assert bearer(token).get(LIST_URL).status_code == 401


def test_it_serves_a_signed_in_session(bob_client, ready_env):
    response = bob_client.get(LIST_URL)
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_it_serves_a_bearer_token_and_notes_its_use(ready_env, token):
    response = bearer(token).get(LIST_URL)
    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert ApiToken.objects.get().last_used_at is not None


def test_it_notes_a_tokens_use_at_most_once_a_minute(ready_env, token):
    a_moment_ago = timezone.now() - timedelta(seconds=10)
    ApiToken.objects.update(last_used_at=a_moment_ago)
    bearer(token).get(LIST_URL)
    assert ApiToken.objects.get().last_used_at == a_moment_ago

    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.update(last_used_at=two_minutes_ago)
    bearer(token).get(LIST_URL)
    assert ApiToken.objects.get().last_used_at not in (None, two_minutes_ago)


def test_it_describes_an_environment(bob_client, ready_env):
    synced_at = timezone.now()
    SyncStatus.objects.create(key="github:acme/shop", last_success_at=synced_at)
    SyncStatus.objects.create(key="cluster", last_error="cluster unreachable: timeout")
    body = bob_client.get(LIST_URL).json()
    assert body["stale"] == {
        "cluster": {"last_success_at": None, "last_error": "cluster unreachable: timeout"},
        "github:acme/shop": {"last_success_at": synced_at.isoformat(), "last_error": ""},
    }
    env = body["results"][0]
    assert env == {
        "repository": "acme/shop",
        "number": 12,
        "title": "PR 12",
        "author": "carol",
        "branch": "feature/12",
        "flavor": "namespace",
        "state": "ready",
        "reason": "all applications healthy",
        "health": "Healthy",
        "sync": "Synced",
        "url": "https://pr-12.preview.example.com",
        "namespace": "pr-12",
        "head_sha": HEAD,
        "deployed_sha": HEAD,
        "expires_at": ready_env.expires_at.isoformat(),
        "pinned": False,
        "apps": [
            {
                "name": "shop-pr-12",
                "role": "app",
                "applicationset": "shop-previews",
                "sync": "",
                "health": "",
                "operation_phase": "",
                "operation_message": "",
                "conditions": [],
                "exists": True,
            },
            {
                "name": "shop-pr-12-cluster",
                "role": "cluster",
                "applicationset": "",
                "sync": "",
                "health": "",
                "operation_phase": "",
                "operation_message": "",
                "conditions": [{"type": "SyncError", "message": "boom"}],
                "exists": True,
            },
        ],
        "cluster_secret": None,
        "last_synced_at": None,  # no cluster sync recorded in this test
        "last_seen_at": ready_env.last_seen_at.isoformat(),
        "links": {"pull_request": "https://github.com/acme/shop/pull/12"},
    }


def test_it_shows_only_open_pull_requests_unless_asked(bob_client, shop, ready_env):
    make_env(make_pull(shop, 13, state=PullRequest.State.MERGED))
    make_env(make_pull(shop, 14, state=PullRequest.State.CLOSED))
    assert [e["number"] for e in bob_client.get(LIST_URL).json()["results"]] == [12]
    everything = bob_client.get(LIST_URL, {"include_closed": "1"}).json()
    assert sorted(e["number"] for e in everything["results"]) == [12, 13, 14]
    assert everything["count"] == 3


def test_it_filters_by_state_flavor_and_repository(bob_client, shop, ready_env):
    make_env(ready_env.pull_request, flavor="vcluster", state=Environment.State.PROVISIONING)
    other = Repository.objects.create(owner="acme", name="billing")
    make_env(make_pull(other, 3), state=Environment.State.DEGRADED)

    def numbers(**params):
        response = bob_client.get(LIST_URL, params)
        assert response.status_code == 200, response.content
        return sorted(
            (e["repository"], e["number"], e["flavor"]) for e in response.json()["results"]
        )

    assert numbers(state="ready") == [("acme/shop", 12, "namespace")]
    assert numbers(state=["ready", "degraded"]) == [
        ("acme/billing", 3, "namespace"),
        ("acme/shop", 12, "namespace"),
    ]
    assert numbers(flavor="vcluster") == [("acme/shop", 12, "vcluster")]
    assert numbers(repository="acme/billing") == [("acme/billing", 3, "namespace")]
    assert numbers(repository="ACME/Shop", flavor="namespace") == [("acme/shop", 12, "namespace")]


@pytest.mark.parametrize(
    "params", [{"state": "bogus"}, {"flavor": "vm"}, {"repository": "noslash"}]
)
def test_it_rejects_unknown_filters(bob_client, ready_env, params):
    response = bob_client.get(LIST_URL, params)
    assert response.status_code == 400
    assert "error" in response.json()


def test_it_shows_one_environment(bob_client, ready_env):
    response = bob_client.get("/api/v1/environments/acme/shop/12/namespace/")
    assert response.status_code == 200
    assert response.json()["deployed_sha"] == HEAD
    assert response.json()["apps"][0]["name"] == "shop-pr-12"


def test_the_detail_accepts_a_bearer_token(ready_env, token):
    response = bearer(token).get("/api/v1/environments/acme/shop/12/namespace/")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/environments/acme/shop/12/vcluster/",
        "/api/v1/environments/acme/shop/99/namespace/",
        "/api/v1/environments/acme/nope/12/namespace/",
        "/api/v1/environments/acme/shop/12/bogus/",
    ],
)
def test_it_answers_404_json_for_an_unknown_environment(bob_client, ready_env, path):
    response = bob_client.get(path)
    assert response.status_code == 404
    assert "error" in response.json()


def test_the_detail_requires_authentication(client, ready_env):
    assert client.get("/api/v1/environments/acme/shop/12/namespace/").status_code == 401


def test_it_is_read_only(bob_client, ready_env):
    assert bob_client.post(LIST_URL).status_code == 405


@pytest.mark.parametrize("count", [1, 30])
def test_the_query_count_does_not_grow_with_rows(shop, token, count, django_assert_max_num_queries):
    SyncStatus.objects.create(key="cluster", last_success_at=timezone.now())
    for number in range(1, count + 1):
        make_env(make_pull(shop, number), state=Environment.State.READY)
    # token lookup, token touch, environments, their apps, sync status
    with django_assert_max_num_queries(5):
        response = bearer(token).get(LIST_URL)
    assert response.json()["count"] == count


def test_it_never_shows_secrets(bob_client, ready_env, token, bob):
    # "cluster_secret" is the sync status block (name, server, fingerprint prefix), allowed;
    # tests/test_secret_sync.py scans for the key material itself.
    text = bearer(token).get(LIST_URL).content.decode().lower().replace('"cluster_secret"', "")
    assert token.lower() not in text
    assert ApiToken.objects.get().key_hash not in text
    for word in ("token", "secret", "password", "kubeconfig", "key_hash", "sessionid"):
        assert word not in text, word


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/environments/?repository=acme/%00",
        "/api/v1/environments/acme%00/shop/12/namespace/",
        "/environments/acme/shop%00/12/namespace/",
    ],
)
def test_a_nul_character_in_the_url_is_a_clear_400(bob_client, ready_env, url):
    response = bob_client.get(url)
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]


def test_api_404s_are_json_and_the_document_is_served(bob_client):
    response = bob_client.get("/api/v1/nothing-here/")
    assert response.status_code == 404 and "error" in response.json()
    document = bob_client.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.") and "/webhooks/github/" in document["paths"]
