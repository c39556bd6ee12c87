"""GitHub webhooks: verify a delivery, drop replays, apply `pull_request` events at once.

GitHub wants an answer within 10 s, so the slow work (refreshing ApplicationSets, syncing
cluster secrets) is queued to Celery after the transaction commits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from environments import tasks
from environments.models import Repository, WebhookDelivery
from environments.pulls import PullData, record_webhook_pull_request

log = logging.getLogger(__name__)

# GitHub caps payloads at 25 MB (FACTS §6.1).
MAX_BODY_BYTES = 25 * 1024 * 1024

PULL_REQUEST_ACTIONS = frozenset(
    {
        "opened",
        "reopened",
        "synchronize",
        "closed",
        "labeled",
        "unlabeled",
        "edited",
        "ready_for_review",
        "converted_to_draft",
    }
)

# Column sizes of PullRequest: longer values would make PostgreSQL refuse the row.
MAX_PULL_NUMBER = 2**31 - 1


def signature_is_valid(secret: str, body: bytes, header: str) -> bool:
    """`header` is `sha256=` + the hex HMAC-SHA256 of the raw body keyed by `secret`."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode())


def content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def pull_request_problem(payload: dict[str, Any]) -> str | None:
    """Why a `pull_request` payload cannot be applied, or None when it can."""
    repo = payload.get("repository")
    owner = repo.get("owner") if isinstance(repo, dict) else None
    if not (
        isinstance(repo, dict)
        and isinstance(repo.get("name"), str)
        and isinstance(owner, dict)
        and isinstance(owner.get("login"), str)
    ):
        return "payload lacks repository.name or repository.owner.login"
    pull_json = payload.get("pull_request")
    if not isinstance(pull_json, dict):
        return "payload lacks a pull_request object"
    number = pull_json.get("number")
    if not isinstance(number, int) or isinstance(number, bool) or not 0 < number <= MAX_PULL_NUMBER:
        return "pull_request.number is not a pull request number"
    try:
        PullData.from_json(pull_json)
    except ValueError as exc:
        return str(exc)
    except (KeyError, TypeError, AttributeError):
        return "pull_request lacks head.ref or head.sha, or has malformed fields"
    return None


def handle_event(event: str, action: str, payload: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """Do what a verified, first-seen delivery asks; return the HTTP status and JSON body."""
    if event == "ping":
        return 200, {"status": "pong"}
    if event != "pull_request" or action not in PULL_REQUEST_ACTIONS:
        return 200, {"status": "ignored"}
    repository, outcome = record_webhook_pull_request(payload)
    if repository is None:
        return 200, {"status": "ignored", "outcome": outcome}
    # The intent first (it survives a broker that is down), then the task that carries it out.
    Repository.objects.filter(pk=repository.id).update(refresh_requested_at=timezone.now())
    tasks.enqueue(tasks.refresh_applicationsets, repository.id)
    tasks.enqueue(tasks.sync_clusters)
    return 202, {"status": "accepted", "outcome": outcome}


def error(status: int, message: str, delivery_id: str = "") -> JsonResponse:
    log.warning("webhook rejected delivery=%r status=%s: %s", delivery_id, status, message)
    return JsonResponse({"status": "error", "error": message}, status=status)


@csrf_exempt
@require_POST
def github_webhook(request: HttpRequest) -> JsonResponse:
    """Receive one GitHub webhook delivery (signed with GITHUB_WEBHOOK_SECRET)."""
    delivery_id = request.headers.get("X-GitHub-Delivery", "")
    event = request.headers.get("X-GitHub-Event", "")
    if content_length(request) > MAX_BODY_BYTES:
        return error(413, "payload larger than 25 MB", delivery_id)
    secret = settings.GITHUB_WEBHOOK_SECRET
    if not secret:
        return error(503, "webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set", delivery_id)
    # Read the stream ourselves: `request.body` refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE,
    # and a server may pass a body without an honest Content-Length.
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return error(413, "payload larger than 25 MB", delivery_id)
    signature = request.headers.get("X-Hub-Signature-256", "")
    if not signature:
        return error(401, "missing X-Hub-Signature-256", delivery_id)
    if not signature_is_valid(secret, body, signature):
        return error(401, "X-Hub-Signature-256 does not match the payload", delivery_id)
    if not delivery_id or len(delivery_id) > 100:
        return error(400, "missing or malformed X-GitHub-Delivery", delivery_id[:100])
    if not event:
        return error(400, "missing X-GitHub-Event", delivery_id)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return error(400, "payload is not JSON (set the webhook content type to JSON)", delivery_id)
    if not isinstance(payload, dict):
        return error(400, "payload is not a JSON object", delivery_id)
    action = payload.get("action")
    action = action if isinstance(action, str) else ""
    if event == "pull_request" and action in PULL_REQUEST_ACTIONS:
        problem = pull_request_problem(payload)
        if problem:
            return error(400, problem, delivery_id)
    repo = payload.get("repository")
    full_name = repo.get("full_name") if isinstance(repo, dict) else None

    with transaction.atomic():
        try:
            with transaction.atomic():
                WebhookDelivery.objects.create(
                    delivery_id=delivery_id,
                    event=event[:50],
                    action=action[:50],
                    repository=full_name[:200] if isinstance(full_name, str) else "",
                )
        except IntegrityError:
            log.info(
                "webhook delivery=%r event=%r action=%r outcome=duplicate",
                delivery_id,
                event,
                action,
            )
            return JsonResponse({"status": "duplicate"})
        status, answer = handle_event(event, action, payload)
    log.info(
        "webhook delivery=%r event=%r action=%r outcome=%r",
        delivery_id,
        event,
        action,
        answer.get("outcome", answer["status"]),
    )
    return JsonResponse(answer, status=status)
