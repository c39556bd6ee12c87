"""Bad input at every boundary, generated with hypothesis: the webhook, the plugin endpoint and
the JSON API answer with a clear 4xx (never a 500), forged signatures are always refused,
replays change nothing, and hostile PR titles and branch names are stored as given and shown
escaped."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from environments.models import ApiToken, Environment, PullRequest, Repository, WebhookDelivery

pytestmark = pytest.mark.django_db
SECRET = "webhook-secret-for-property-tests"
PLUGIN_TOKEN = "plugin-token-for-property-tests"
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
hostile_text = st.one_of(
    st.text(min_size=1, max_size=300),
    st.sampled_from([
        "<script>alert(1)</script>", "feature/login", "-leading-dash", "UPPER/Case_Branch",
        "x" * 300, "ünïcødé/ブランチ", "../../etc/passwd", "a\u202eb", "\"'`;--",
    ]),
)  # fmt: skip


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.GITHUB_WEBHOOK_SECRET = SECRET
    settings.ARGOCD_PLUGIN_TOKEN = PLUGIN_TOKEN


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def post_webhook(client: Client, body: bytes, signature: str | None, delivery: str = "d") -> int:
    headers = {"HTTP_X_GITHUB_EVENT": "pull_request", "HTTP_X_GITHUB_DELIVERY": delivery}
    if signature is not None:
        headers["HTTP_X_HUB_SIGNATURE_256"] = signature
    response = client.post("/webhooks/github/", data=body, content_type="application/json",
                           **headers)  # fmt: skip
    return response.status_code


@FAST
@given(body=st.binary(max_size=2000), signature=st.one_of(st.none(), st.text(max_size=80)))
def test_a_forged_or_missing_signature_is_always_refused(client, body, signature):
    assert post_webhook(client, body, signature) == 401
    assert not WebhookDelivery.objects.exists()


@FAST
@given(payload=json_values)
def test_any_signed_json_gets_a_clear_answer_never_a_500(client, payload):
    body = json.dumps(payload).encode()
    assert post_webhook(client, body, sign(body), delivery=hashlib.md5(body).hexdigest()) in (  # noqa: S324
        200, 202, 400,
    )  # fmt: skip


@FAST
@given(title=hostile_text, branch=hostile_text)
def test_hostile_titles_and_branches_are_kept_and_shown_escaped(client, title, branch):
    repository, _ = Repository.objects.get_or_create(owner="acme", name="shop")
    payload = {
        "action": "opened",
        "number": 5,
        "pull_request": {
            "number": 5, "title": title, "user": {"login": "mallory"},
            "head": {"ref": branch, "sha": "c" * 40}, "base": {"ref": "main"}, "labels": [],
            "draft": False, "state": "open", "html_url": "https://github.com/acme/shop/pull/5",
            "updated_at": "2026-01-01T00:00:00Z",
        },
        "repository": {"name": "shop", "owner": {"login": "acme"}},
    }  # fmt: skip
    body = json.dumps(payload).encode()
    status = post_webhook(client, body, sign(body), delivery=hashlib.sha1(body).hexdigest())  # noqa: S324
    assert status in (202, 400)  # 400: a branch GitHub could not have (e.g. over 255 characters)
    pr = PullRequest.objects.filter(repository=repository, number=5).first()
    if status == 202:
        assert pr is not None and pr.title == title.replace("\x00", "")
        Environment.objects.get_or_create(pull_request=pr, flavor="namespace",
                                          defaults={"state": "invalid", "reason": f"`{branch}`"})  # fmt: skip
        user, _ = User.objects.get_or_create(username="viewer")
        user.groups.set([Group.objects.get(name="viewer")])
        viewer = Client()
        viewer.force_login(user)
        html = viewer.get("/").content.decode()
        assert "<script>alert(1)</script>" not in html
    PullRequest.objects.all().delete()


def test_an_oversized_body_is_413(client):
    body = b"{" + b" " * (25 * 1024 * 1024 + 1) + b"}"
    assert post_webhook(client, body, sign(body)) == 413


def test_a_replayed_delivery_is_ignored(client):
    Repository.objects.create(owner="acme", name="shop")
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    headers = {"HTTP_X_GITHUB_EVENT": "ping", "HTTP_X_GITHUB_DELIVERY": "same",
               "HTTP_X_HUB_SIGNATURE_256": sign(body)}  # fmt: skip
    first = client.post("/webhooks/github/", body, content_type="application/json", **headers)
    again = client.post("/webhooks/github/", body, content_type="application/json", **headers)
    assert first.status_code == 200 and again.json() == {"status": "duplicate"}


@FAST
@given(body=st.one_of(json_values.map(json.dumps), st.text(max_size=200)))
def test_the_plugin_endpoint_never_answers_500(client, body):
    response = client.post("/api/v1/getparams.execute", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {PLUGIN_TOKEN}")  # fmt: skip
    assert response.status_code in (200, 400, 404, 503)
    assert "error" in response.json() or "output" in response.json()


@FAST
@given(token=st.text(max_size=60))
def test_the_plugin_endpoint_refuses_every_wrong_token(client, token):
    if token.strip() == PLUGIN_TOKEN:
        return
    response = client.post("/api/v1/getparams.execute", "{}", content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert response.status_code == 401


@pytest.fixture
def api_token(db) -> str:
    user = User.objects.create_user("ci")
    user.groups.set([Group.objects.get(name="tester")])
    return ApiToken.issue(user, "ci")[1]


@FAST
@given(
    query=st.dictionaries(
        st.sampled_from(["state", "flavor", "repository", "include_closed", "page", "x"]),
        st.text(max_size=40),
        max_size=4,
    )
)
def test_the_read_api_answers_any_query_with_json(client, api_token, query):
    response = client.get("/api/v1/environments/", query, HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code in (200, 400)
    assert isinstance(response.json(), dict)


@FAST
@given(
    kind=st.sampled_from(["extend", "destroy", "recreate", "redeploy", "pin", "unpin", "x", ""]),
    body=json_values.map(json.dumps),
)
def test_the_write_api_answers_any_body_with_a_clear_status(client, api_token, kind, body):
    repository, _ = Repository.objects.get_or_create(owner="acme", name="shop")
    pr, _ = PullRequest.objects.get_or_create(
        repository=repository, number=1,
        defaults={"title": "t", "author": "a", "branch": "b", "head_sha": "d" * 40},
    )  # fmt: skip
    Environment.objects.get_or_create(pull_request=pr, flavor="namespace",
                                      defaults={"state": "ready"})  # fmt: skip
    path = (
        f"/api/v1/environments/acme/shop/1/namespace/{kind}/"
        if kind
        else ("/api/v1/environments/acme/shop/1/namespace/")
    )
    response = client.post(path, body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {api_token}")  # fmt: skip
    assert response.status_code in (202, 400, 403, 404, 405, 409)
