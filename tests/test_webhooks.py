from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging

import pytest
from django.test import RequestFactory

from environments import tasks, webhooks
from environments.models import Event, PullRequest, Repository, WebhookDelivery

SECRET = "webhook-secret-for-tests"
URL = "/webhooks/github/"
OLD_SHA = "a" * 40
NEW_SHA = "b" * 40


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def pr_payload(action: str = "synchronize", **pull: object) -> dict:
    data = {
        "number": 12,
        "title": "Add checkout",
        "user": {"login": "carol"},
        "head": {"ref": "feature/checkout", "sha": NEW_SHA},
        "base": {"ref": "main"},
        "labels": [{"name": "preview"}],
        "draft": False,
        "state": "open",
        "html_url": "https://github.com/acme/shop/pull/12",
        "updated_at": "2025-01-02T03:04:05Z",
    }
    data.update(pull)
    return {
        "action": action,
        "number": data["number"],
        "pull_request": data,
        "repository": {"name": "shop", "full_name": "acme/shop", "owner": {"login": "acme"}},
    }


def deliver(client, payload, *, event="pull_request", delivery="d-1", signature=None, **extra):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"HTTP_X_HUB_SIGNATURE_256": signature if signature is not None else sign(body)}
    if event:
        headers["HTTP_X_GITHUB_EVENT"] = event
    if delivery:
        headers["HTTP_X_GITHUB_DELIVERY"] = delivery
    headers.update(extra)
    return client.post(URL, data=body, content_type="application/json", **headers)


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.GITHUB_WEBHOOK_SECRET = SECRET


@pytest.fixture
def queued(monkeypatch) -> list[tuple[str, tuple]]:
    """Tasks queued by tasks.enqueue, once the transaction commits (they never run)."""
    calls: list[tuple[str, tuple]] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def delay(self, *args: object) -> None:
            # tasks.enqueue calls this once the transaction commits: the broker is the list.
            calls.append((self.name, args))

    monkeypatch.setattr(
        tasks, "refresh_applicationsets", Recorder("refresh_applicationsets"), raising=False
    )
    monkeypatch.setattr(tasks, "sync_clusters", Recorder("sync_clusters"), raising=False)
    return calls


@pytest.fixture
def send(client, django_capture_on_commit_callbacks):
    """deliver(), then run what the request's commit would run (on-commit callbacks)."""

    def send(payload, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return deliver(client, payload, **kwargs)

    return send


@pytest.fixture
def pull(db) -> PullRequest:
    repository = Repository.objects.create(owner="acme", name="shop")
    return PullRequest.objects.create(
        repository=repository,
        number=12,
        title="Add checkout",
        author="carol",
        branch="feature/checkout",
        head_sha=OLD_SHA,
        labels=["preview"],
        html_url="https://github.com/acme/shop/pull/12",
    )


def test_the_signature_matches_githubs_test_vector():
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert webhooks.signature_is_valid("It's a Secret to Everybody", b"Hello, World!", expected)
    assert not webhooks.signature_is_valid("another secret", b"Hello, World!", expected)


def test_it_answers_a_signed_ping(client, db):
    response = deliver(client, {"zen": "Keep it simple."}, event="ping")
    assert response.status_code == 200
    assert response.json() == {"status": "pong"}
    assert WebhookDelivery.objects.get().event == "ping"


def test_it_rejects_a_forged_signature(send, db, pull, queued):
    body = json.dumps(pr_payload()).encode()
    response = send(body, signature=sign(body, "not-the-secret"))
    assert response.status_code == 401
    assert response.json()["status"] == "error"
    pull.refresh_from_db()
    assert pull.head_sha == OLD_SHA
    assert not WebhookDelivery.objects.exists()
    assert queued == []


def test_it_rejects_a_body_changed_after_signing(client, db, pull):
    body = json.dumps(pr_payload()).encode()
    tampered = body.replace(b"Add checkout", b"Add backdoor")
    response = deliver(client, tampered, signature=sign(body))
    assert response.status_code == 401


def test_it_rejects_a_missing_signature(client, db):
    response = deliver(client, {"zen": "hi"}, event="ping", signature="")
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["error"]


def test_it_never_echoes_or_logs_the_secret_or_the_signature(client, db, caplog):
    body = b'{"zen": "hi"}'
    forged = sign(body, "guess")
    with caplog.at_level(logging.DEBUG):
        deliver(client, body, event="ping", signature=forged)
        response = deliver(client, body, event="ping")
    for text in (response.content.decode(), caplog.text):
        assert SECRET not in text
        assert forged not in text
        assert sign(body) not in text


def test_it_says_webhooks_are_off_when_no_secret_is_set(client, db, settings):
    settings.GITHUB_WEBHOOK_SECRET = ""
    response = deliver(client, {"zen": "hi"}, event="ping", signature=sign(b'{"zen": "hi"}', ""))
    assert response.status_code == 503
    assert "GITHUB_WEBHOOK_SECRET" in response.json()["error"]


def test_it_refuses_an_over_limit_content_length_without_reading(client, db):
    response = deliver(client, b"{}", event="ping", CONTENT_LENGTH=str(25 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert not WebhookDelivery.objects.exists()


def test_it_stops_reading_a_body_that_has_no_honest_length(db, monkeypatch):
    monkeypatch.setattr(webhooks, "MAX_BODY_BYTES", 100)
    body = json.dumps({"zen": "x" * 500}).encode()
    request = RequestFactory().post(
        URL,
        data=body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="ping",
        HTTP_X_GITHUB_DELIVERY="d-1",
        HTTP_X_HUB_SIGNATURE_256=sign(body),
    )
    # As an ASGI server hands over a chunked upload: no Content-Length, the whole stream.
    del request.META["CONTENT_LENGTH"]
    request._stream = io.BytesIO(body)
    response = webhooks.github_webhook(request)
    assert response.status_code == 413


def test_it_accepts_bodies_above_djangos_upload_memory_limit(client, db, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = deliver(client, {"zen": "x" * 5000}, event="ping")
    assert response.status_code == 200


@pytest.mark.parametrize("missing", ["delivery", "event"])
def test_it_requires_the_delivery_and_event_headers(client, db, missing):
    kwargs = {"event": "ping", "delivery": "d-1", missing: ""}
    response = deliver(client, {"zen": "hi"}, **kwargs)
    assert response.status_code == 400
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"payload=%7B%7D",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_it_rejects_malformed_payloads(client, db, body):
    response = deliver(client, body, event="ping")
    assert response.status_code == 400
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "opened"},
        {**pr_payload("opened"), "pull_request": "12"},
        {**pr_payload("opened"), "repository": {"name": "shop"}},
        pr_payload("opened", head="feature"),
        pr_payload("opened", head={"ref": "feature"}),
        pr_payload("opened", number="twelve"),
        pr_payload("opened", number=-3),
        pr_payload("opened", number=10**20),
        pr_payload("opened", user="carol"),
        pr_payload("opened", labels=["preview"]),
        pr_payload("opened", updated_at="2025-13-45T99:00:00Z"),
        pr_payload("opened", head={"ref": "x" * 300, "sha": NEW_SHA}),
        pr_payload("opened", head={"ref": "feature", "sha": "not-a-commit-sha"}),
        pr_payload("opened", head={"ref": "feature", "sha": "c" * 41}),
        pr_payload("opened", labels=[{"name": "a\u0000"}]),
    ],
)
def test_it_rejects_pull_request_payloads_missing_what_it_needs(send, db, pull, queued, payload):
    response = send(payload)
    assert response.status_code == 400, response.content
    assert response.json()["status"] == "error"
    assert not WebhookDelivery.objects.exists()
    assert queued == []


def test_a_push_updates_the_head_at_once_and_queues_work_after_commit(
    client, db, pull, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, pr_payload("synchronize"))
        pull.refresh_from_db()
        assert pull.head_sha == NEW_SHA
        assert queued == []  # not before the commit
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "outcome": "synchronize: acme/shop#12"}
    assert Event.objects.filter(pull_request=pull, kind="pushed").exists()
    assert queued == [
        ("refresh_applicationsets", (pull.repository_id,)),
        ("sync_clusters", ()),
    ]


def test_a_replayed_delivery_changes_nothing(send, db, pull, queued):
    first = send(pr_payload("synchronize"), delivery="d-42")
    assert first.status_code == 202
    assert len(queued) == 2
    queued.clear()
    PullRequest.objects.filter(pk=pull.pk).update(head_sha=OLD_SHA)
    events = Event.objects.count()

    replay = send(pr_payload("synchronize"), delivery="d-42")
    assert replay.status_code == 200
    assert replay.json() == {"status": "duplicate"}
    pull.refresh_from_db()
    assert pull.head_sha == OLD_SHA
    assert Event.objects.count() == events
    assert WebhookDelivery.objects.count() == 1
    assert queued == []


def test_a_failed_delivery_can_be_redelivered(client, db, pull, queued, monkeypatch):
    real = webhooks.record_webhook_pull_request
    failures = [RuntimeError("database hiccup")]

    def fail_once(payload):
        if failures:
            raise failures.pop()
        return real(payload)

    monkeypatch.setattr(webhooks, "record_webhook_pull_request", fail_once)
    client.raise_request_exception = False
    assert deliver(client, pr_payload(), delivery="d-7").status_code == 500
    assert not WebhookDelivery.objects.exists()
    assert deliver(client, pr_payload(), delivery="d-7").status_code == 202
    assert WebhookDelivery.objects.get().delivery_id == "d-7"


def test_it_ignores_pull_requests_of_unknown_repositories(send, db, queued):
    payload = pr_payload("opened")
    payload["repository"] = {
        "name": "other",
        "full_name": "someone/other",
        "owner": {"login": "someone"},
    }
    response = send(payload)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert not PullRequest.objects.exists()
    assert queued == []


def test_it_ignores_disabled_repositories(send, db, pull, queued):
    Repository.objects.update(enabled=False)
    response = send(pr_payload("synchronize"))
    assert response.json()["status"] == "ignored"
    pull.refresh_from_db()
    assert pull.head_sha == OLD_SHA
    assert queued == []


@pytest.mark.parametrize(
    ("event", "action"),
    [("push", ""), ("issues", "opened"), ("pull_request", "assigned"), ("pull_request", "")],
)
def test_it_ignores_other_events_and_actions(send, db, pull, queued, event, action):
    payload = pr_payload(action) if action else {"ref": "refs/heads/main"}
    response = send(payload, event=event)
    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    pull.refresh_from_db()
    assert pull.head_sha == OLD_SHA
    assert queued == []


def test_an_opened_pull_request_is_created(client, db, pull, queued):
    response = deliver(client, pr_payload("opened", number=13))
    assert response.status_code == 202
    assert PullRequest.objects.get(number=13).branch == "feature/checkout"


def test_a_merge_is_recorded(client, db, pull, queued):
    response = deliver(client, pr_payload("closed", state="closed", merged=True))
    assert response.status_code == 202
    pull.refresh_from_db()
    assert pull.state == PullRequest.State.MERGED


@pytest.mark.parametrize(
    ("title", "branch"),
    [
        ("x" * 100_000, "feature/checkout"),
        ("<script>alert('owned')</script><img src=x onerror=alert(1)>", "fix/<b>html</b>"),
        ("Ünïcödé 🚀 中文 \u202e\u200b", "feat/émoji-🚀/deep/nested/branch"),
        ("", "a/b/c/d/e/f/g"),
    ],
)
def test_hostile_titles_and_branches_do_not_break_it(client, db, pull, queued, title, branch):
    payload = pr_payload("edited", title=title, head={"ref": branch, "sha": NEW_SHA})
    response = deliver(client, payload)
    assert response.status_code == 202, response.content
    pull.refresh_from_db()
    assert pull.branch == branch
    assert len(pull.title) <= 1024
    assert "<script>" not in response.content.decode()


def test_it_logs_one_line_per_delivery(client, db, pull, queued, caplog):
    with caplog.at_level(logging.INFO, logger="environments.webhooks"):
        deliver(client, pr_payload("labeled"), delivery="d-99")
    lines = [r.getMessage() for r in caplog.records if r.name == "environments.webhooks"]
    assert len(lines) == 1
    assert "d-99" in lines[0] and "pull_request" in lines[0] and "labeled" in lines[0]


def test_it_only_accepts_post(client, db):
    assert client.get(URL).status_code == 405


def test_a_nul_byte_in_a_title_is_dropped_not_stored(send, db, pull, queued):
    response = send(pr_payload("opened", title="nul \u0000 byte"))
    assert response.status_code == 202, response.content
    pull.refresh_from_db()
    assert pull.title == "nul  byte"


def test_an_older_event_arriving_late_changes_nothing(send, db, pull, queued):
    assert send(pr_payload("synchronize", updated_at="2025-01-02T03:04:05Z"),
                delivery="d-new").status_code == 202  # fmt: skip
    late = pr_payload("closed", state="closed", updated_at="2025-01-01T00:00:00Z",
                      head={"ref": "feature/checkout", "sha": OLD_SHA})  # fmt: skip
    response = send(late, delivery="d-old")
    assert "older event" in response.json()["outcome"]
    pull.refresh_from_db()
    assert (pull.state, pull.head_sha) == ("open", NEW_SHA)
