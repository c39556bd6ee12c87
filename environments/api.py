"""The read API for CI pipelines and scripts: environments as JSON.

Callers sign in with the portal session or `Authorization: Bearer <token>` (an ApiToken).
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from environments import lifecycle, plugin
from environments.models import ApiToken, Environment, PullRequest, SyncStatus, hash_token
from environments.sync import KUBERNETES

# Writing last_used_at on every call would turn each read into a write.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)

View = Callable[..., JsonResponse]


def token_from_header(request: HttpRequest) -> ApiToken | None:
    """The active ApiToken named by `Authorization: Bearer <token>`, or None."""
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def api_login_required(view: View) -> View:
    """Let in a signed-in session or a valid bearer token; otherwise answer 401 JSON."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            token = token_from_header(request)
            if token is None:
                response = JsonResponse(
                    {"error": "authentication required: sign in or send a bearer token"},
                    status=401,
                )
                response["WWW-Authenticate"] = 'Bearer realm="envportal"'
                return response
            request.user = token.user
        return view(request, *args, **kwargs)

    return wrapper


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def environments() -> QuerySet[Environment]:
    """Environments with everything `environment_json` reads, in a fixed number of queries."""
    return Environment.objects.select_related(
        "pull_request__repository", "cluster_secret"
    ).prefetch_related("apps")


PLUGIN_MAX_BODY = 1024 * 1024


def kubernetes_synced_at(statuses: list[SyncStatus]) -> datetime | None:
    """When the cluster was last read: what every environment's state is as of."""
    return next((s.last_success_at for s in statuses if s.key == KUBERNETES), None)


def environment_json(env: Environment, synced_at: datetime | None = None) -> dict[str, Any]:
    pr = env.pull_request
    return {
        "repository": pr.repository.full_name,
        "number": pr.number,
        "title": pr.title,
        "author": pr.author,
        "branch": pr.branch,
        "flavor": env.flavor,
        "state": env.state,
        "reason": env.reason,
        "health": env.health,
        "sync": env.sync,
        "url": env.url,
        "namespace": env.namespace,
        "head_sha": pr.head_sha,
        "deployed_sha": env.deployed_sha,
        "expires_at": iso(env.expires_at),
        "pinned": env.pinned,
        "apps": [
            {
                "name": app.name,
                "role": app.role,
                "applicationset": app.applicationset,
                "sync": app.sync,
                "health": app.health,
                "operation_phase": app.operation_phase,
                "operation_message": app.operation_message,
                "conditions": app.conditions,
                "exists": app.exists,
            }
            for app in env.apps.all()
        ],
        "cluster_secret": cluster_secret_json(env),
        "last_synced_at": iso(synced_at),
        "last_seen_at": iso(env.last_seen_at),
        "links": {"pull_request": pr.html_url},
    }


def cluster_secret_json(env: Environment) -> dict[str, Any] | None:
    """The Argo CD cluster secret's sync status (never its content)."""
    record = getattr(env, "cluster_secret", None)
    if record is None:
        return None
    return {
        "name": record.secret_name,
        "state": record.state,
        "server": record.server,
        "fingerprint": record.fingerprint,
        "synced_at": iso(record.synced_at),
        "message": record.message,
    }


def sync_status_json(statuses: list[SyncStatus]) -> dict[str, dict[str, str | None]]:
    """How fresh the data is: when each outside system was last read, and its last error."""
    return {
        status.key: {
            "last_success_at": iso(status.last_success_at),
            "last_error": status.last_error,
        }
        for status in statuses
    }


def find(owner: str, repo: str, number: int, flavor: str) -> Environment | None:
    return (
        environments()
        .filter(
            pull_request__repository__owner__iexact=owner,
            pull_request__repository__name__iexact=repo,
            pull_request__number=number,
            flavor=flavor,
        )
        .first()
    )


def not_found(owner: str, repo: str, number: int, flavor: str) -> JsonResponse:
    return JsonResponse(
        {"error": f"no {flavor} environment for {owner}/{repo}#{number}"}, status=404
    )


def bad_request(message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=400)


@require_safe
@never_cache
@api_login_required
def environment_list(request: HttpRequest) -> JsonResponse:
    """Environments of open PRs; filters: state, flavor, repository=owner/name, include_closed=1."""
    queryset = environments()
    if request.GET.get("include_closed") not in ("1", "true", "yes"):
        queryset = queryset.filter(pull_request__state=PullRequest.State.OPEN)
    states = request.GET.getlist("state")
    if states:
        unknown = set(states) - set(Environment.State.values)
        if unknown:
            return bad_request(f"unknown state {sorted(unknown)[0]!r}")
        queryset = queryset.filter(state__in=states)
    flavors = request.GET.getlist("flavor")
    if flavors:
        unknown = set(flavors) - set(Environment.Flavor.values)
        if unknown:
            return bad_request(f"unknown flavor {sorted(unknown)[0]!r}")
        queryset = queryset.filter(flavor__in=flavors)
    repository = request.GET.get("repository")
    if repository:
        owner, _, name = repository.partition("/")
        if not owner or not name:
            return bad_request("repository must be owner/name")
        queryset = queryset.filter(
            pull_request__repository__owner__iexact=owner,
            pull_request__repository__name__iexact=name,
        )
    statuses = list(SyncStatus.objects.order_by("key"))
    synced_at = kubernetes_synced_at(statuses)
    results = [environment_json(env, synced_at) for env in queryset]
    return JsonResponse(
        {"count": len(results), "results": results, "stale": sync_status_json(statuses)}
    )


@require_safe
@never_cache
@api_login_required
def environment_detail(
    request: HttpRequest, owner: str, repo: str, number: int, flavor: str
) -> JsonResponse:
    """One environment: /api/v1/environments/<owner>/<repo>/<number>/<flavor>/."""
    env = find(owner, repo, number, flavor)
    if env is None:
        return not_found(owner, repo, number, flavor)
    statuses = list(SyncStatus.objects.filter(key=KUBERNETES))
    return JsonResponse(environment_json(env, kubernetes_synced_at(statuses)))


@csrf_exempt
@require_POST
def plugin_getparams(request: HttpRequest) -> JsonResponse:
    """Argo CD Plugin generator: POST /api/v1/getparams.execute (managed mode)."""
    expected = settings.ARGOCD_PLUGIN_TOKEN
    if not expected:
        return JsonResponse({"error": "ARGOCD_PLUGIN_TOKEN is not set on envportal"}, status=503)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    if not given or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return JsonResponse({"error": "missing or wrong bearer token"}, status=401)
    if len(request.body) > PLUGIN_MAX_BODY:
        return JsonResponse({"error": "request body too large"}, status=413)
    try:
        query = plugin.Query.from_input(json.loads(request.body or b"null"))
        parameters = plugin.wanted(query)
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"error": "the body is not valid JSON"}, status=400)
    except plugin.PluginError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    return JsonResponse({"output": {"parameters": parameters}})


def _csrf_probe(request: HttpRequest) -> HttpResponse:
    """A view that is not CSRF-exempt, for checking a session's POST by hand."""
    return HttpResponse()


@csrf_exempt
@require_POST
def environment_action(
    request: HttpRequest, owner: str, repo: str, number: int, flavor: str, kind: str
) -> JsonResponse:
    """POST .../<flavor>/<action>/: extend ({"hours": N}), destroy, recreate, redeploy, pin
    ({"reason": "..."}), unpin. The UI's permissions; 202 with the environment's JSON.
    A bearer token needs no CSRF token; a signed-in session does."""
    token = token_from_header(request)
    if token is not None:
        request.user = token.user
    elif request.user.is_authenticated:
        csrf = CsrfViewMiddleware(_csrf_probe)
        if csrf.process_view(request, _csrf_probe, (), {}):
            return JsonResponse({"error": "CSRF check failed: send X-CSRFToken"}, status=403)
    else:
        return JsonResponse({"error": "authentication required: send a bearer token"}, status=401)
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return bad_request("the body is not valid JSON")
    if not isinstance(body, dict):
        return bad_request("the body must be a JSON object")
    env = find(owner, repo, number, flavor)
    if env is None:
        return not_found(owner, repo, number, flavor)
    try:
        action = lifecycle.request_action(request.user, env, kind, body)
    except lifecycle.ActionError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    env = environments().get(pk=env.pk)
    statuses = list(SyncStatus.objects.filter(key=KUBERNETES))
    answer = environment_json(env, kubernetes_synced_at(statuses))
    answer["action"] = {
        "id": action.pk,
        "kind": action.kind,
        "state": action.state,
        "message": action.message,
    }
    return JsonResponse(answer, status=202)


OPENAPI = Path(__file__).with_name("openapi.yaml")


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3 document (environments/openapi.yaml), read once."""
    return dict(yaml.safe_load(OPENAPI.read_text()))


@require_safe
def openapi(request: HttpRequest) -> JsonResponse:
    """GET /api/v1/openapi.json: the document describing this API."""
    return JsonResponse(openapi_document())


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404s of the API and the webhook are JSON like their other answers; pages stay HTML."""
    if request.path.startswith(("/api/", "/webhooks/")):
        return JsonResponse({"error": f"no such endpoint: {request.path[:200]}"}, status=404)
    return defaults.page_not_found(request, exception)
