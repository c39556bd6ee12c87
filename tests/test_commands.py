from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from environments.models import ApiToken, Environment, PullRequest, Repository

HEAD = "d" * 40
OLD = "e" * 40


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def env(db) -> Environment:
    repository = Repository.objects.create(owner="acme", name="shop")
    pull = PullRequest.objects.create(
        repository=repository,
        number=12,
        title="Add checkout",
        author="carol",
        branch="feature/checkout",
        head_sha=HEAD,
    )
    return Environment.objects.create(
        pull_request=pull,
        flavor=Environment.Flavor.NAMESPACE,
        state=Environment.State.PROVISIONING,
        reason="waiting for pods",
        url="https://pr-12.preview.example.com",
    )


def wait(*extra: str) -> str:
    return run("wait_for_environment", "acme/shop", "12", "--flavor", "namespace", *extra)


def test_create_api_token_prints_a_working_bearer_token(bob):
    raw = run("create_api_token", "bob", "--name", "CI").strip()
    token = ApiToken.objects.get()
    assert token.user == bob and token.name == "CI"
    assert raw.startswith(token.prefix)
    assert raw not in (token.key_hash, token.prefix)
    response = Client(headers={"Authorization": f"Bearer {raw}"}).get("/api/v1/environments/")
    assert response.status_code == 200


def test_create_api_token_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run("create_api_token", "nobody")
    assert not ApiToken.objects.exists()


def test_wait_succeeds_once_ready_on_the_head_commit(env):
    Environment.objects.filter(pk=env.pk).update(
        state=Environment.State.READY, reason="", deployed_sha=HEAD
    )
    out = wait("--timeout", "1")
    assert out.splitlines()[-1] == "https://pr-12.preview.example.com"


def test_wait_follows_progress_until_ready(env, monkeypatch):
    # Each pause moves the environment one step on, as the workers would.
    steps = [
        {"state": Environment.State.READY, "reason": "", "deployed_sha": OLD},
        {"state": Environment.State.READY, "reason": "", "deployed_sha": HEAD},
    ]

    def sleep(seconds: float) -> None:
        Environment.objects.filter(pk=env.pk).update(**steps.pop(0))

    monkeypatch.setattr("time.sleep", sleep)
    out = wait("--timeout", "60", "--interval", "0.01").splitlines()
    assert out == [
        "provisioning (deployed nothing, head ddddddd): waiting for pods",
        "ready (deployed eeeeeee, head ddddddd)",
        "ready (deployed ddddddd, head ddddddd)",
        "https://pr-12.preview.example.com",
    ]


def test_wait_times_out_with_the_last_state(env):
    with pytest.raises(CommandError) as raised:
        wait("--timeout", "0.05", "--interval", "0.01")
    assert raised.value.returncode == 1
    assert "provisioning: waiting for pods" in str(raised.value)


def test_wait_keeps_waiting_while_an_older_commit_is_deployed(env):
    Environment.objects.filter(pk=env.pk).update(state=Environment.State.READY, deployed_sha=OLD)
    with pytest.raises(CommandError) as raised:
        wait("--timeout", "0.05", "--interval", "0.01")
    assert raised.value.returncode == 1


@pytest.mark.parametrize("state", ["invalid", "destroyed", "expired"])
def test_wait_gives_up_at_once_on_a_final_state(env, state):
    Environment.objects.filter(pk=env.pk).update(state=state, reason="branch name too long")
    with pytest.raises(CommandError, match=f"{state}: branch name too long") as raised:
        wait("--timeout", "60")
    assert raised.value.returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("acme/nope", "12", "--flavor", "namespace"), "unknown repository acme/nope"),
        (("acme/shop", "99", "--flavor", "namespace"), "unknown pull request acme/shop#99"),
        (("acme/shop", "12", "--flavor", "vcluster"), "has no vcluster environment"),
        (("shop", "12", "--flavor", "namespace"), "owner/name"),
    ],
)
def test_wait_gives_up_at_once_on_an_unknown_environment(env, args, message):
    with pytest.raises(CommandError, match=message) as raised:
        run("wait_for_environment", *args, "--timeout", "60")
    assert raised.value.returncode == 2


def test_wait_syncs_each_round_when_asked(env, monkeypatch):
    calls = []

    def sync_all() -> dict:
        calls.append(1)
        Environment.objects.filter(pk=env.pk).update(
            state=Environment.State.READY, deployed_sha=HEAD
        )
        return {}

    monkeypatch.setattr("environments.sync.sync_all", sync_all)
    out = wait("--timeout", "5", "--sync")
    assert calls == [1]
    assert out.splitlines()[-1] == "https://pr-12.preview.example.com"
