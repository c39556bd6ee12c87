"""Pages: the dashboard, an environment, actions, and a user's API tokens. Thin: permission,
one domain call, a response (the htmx partial for htmx requests, a redirect otherwise)."""

from __future__ import annotations

import dataclasses
import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_htmx.http import reswap, retarget
from django_htmx.middleware import HtmxDetails

from environments import dashboard, lifecycle, permissions, sync
from environments.models import ApiToken, Environment, Event, Repository
from environments.tasks import HEARTBEAT_KEY


class Request(HttpRequest):
    """A signed-in request through django-htmx's middleware (for type checking)."""

    htmx: HtmxDetails
    user: User


log = logging.getLogger(__name__)
LOW_BUDGET = 0.1  # warn when less than 10 % of GitHub's rate limit is left


def _status(request: HttpRequest) -> dict[str, object]:
    """Freshness and the worker heartbeat, shown on every live page."""
    freshness = sync.freshness()
    low = [
        f
        for f in freshness
        if f.budget.get("limit") and f.budget.get("remaining", 0) < f.budget["limit"] * LOW_BUDGET
    ]
    return {
        "freshness": freshness,
        "stale": [f for f in freshness if f.stale],
        "low_budget": low,
        "heartbeat": _heartbeat(),
    }


def _heartbeat() -> str | None:
    """The worker's last beat; None (shown as "no heartbeat") when Redis cannot be read."""
    try:
        value = cache.get(HEARTBEAT_KEY)
    except Exception as exc:
        log.warning("cannot read the worker heartbeat: %s", type(exc).__name__)
        return None
    return str(value) if value else None


@login_required
def home(request: Request) -> HttpResponse:
    """Open PRs' environments by repository, filtered, live-refreshed by htmx."""
    roles = permissions.roles_of(request.user)
    filters = dashboard.Filters.from_query(request.GET)
    page = dashboard.paginate(dashboard.environments(filters, roles), request.GET.get("page"))
    counted = dashboard.environments(dataclasses.replace(filters, state=""), roles)
    context = {
        "filters": filters,
        "roles": roles,
        "page": page,
        "groups": dashboard.grouped(page, roles),
        "summary_links": dashboard.summary_links(filters, dashboard.summary(counted)),
        "back": request.get_full_path(),
        "repositories": Repository.objects.filter(enabled=True).only("owner", "name"),
        "flavors": Environment.Flavor.values,
        "states": dashboard.STATES,
        **_status(request),
    }
    template = "environments/home.html"
    if request.htmx and request.htmx.target == "live":
        template += "#live"
    return render(request, template, context)


def _environment(owner: str, repo: str, number: int, flavor: str) -> Environment:
    return get_object_or_404(
        Environment.objects.select_related("pull_request__repository"),
        pull_request__repository__owner__iexact=owner,
        pull_request__repository__name__iexact=repo,
        pull_request__number=number,
        flavor=flavor,
    )


@login_required
def environment_detail(
    request: Request, owner: str, repo: str, number: int, flavor: str
) -> HttpResponse:
    """One environment: applications, readiness, cluster secret, timeline, actions."""
    env = get_object_or_404(
        Environment.objects.select_related("pull_request__repository", "cluster_secret"),
        pull_request__repository__owner__iexact=owner,
        pull_request__repository__name__iexact=repo,
        pull_request__number=number,
        flavor=flavor,
    )
    roles = permissions.roles_of(request.user)
    events = Event.objects.filter(
        Q(environment=env) | Q(pull_request=env.pull_request, environment=None)
    )[:100]
    path = reverse("api-environment", args=[owner, repo, number, flavor])
    context = {
        "env": env,
        "row": dashboard.row(env, roles, timezone.now()),
        "apps": env.apps.all(),
        "events": events,
        "actions": env.actions.all()[:10],
        "cluster_secret": getattr(env, "cluster_secret", None),
        "destroy_blocker": permissions.blocker("destroy", env)
        if permissions.may(roles, "destroy", env)
        else None,
        "argocd_url": settings.ARGOCD_URL.rstrip("/"),
        "argocd_namespace": settings.ARGOCD_NAMESPACE,
        "api_url": request.build_absolute_uri(path),
        **_status(request),
    }
    template = "environments/detail.html"
    if request.htmx and request.htmx.target == "live":
        template += "#live"
    return render(request, template, context)


def _back(request: Request, env: Environment) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return _env_url(env)


def _env_url(env: Environment) -> str:
    pr = env.pull_request
    return reverse(
        "environment", args=[pr.repository.owner, pr.repository.name, pr.number, env.flavor]
    )


@login_required
@require_http_methods(["GET", "POST"])
def act(
    request: Request, owner: str, repo: str, number: int, flavor: str, kind: str
) -> HttpResponse:
    """POST an action. GET shows the confirmation page (destroy without JavaScript)."""
    env = _environment(owner, repo, number, flavor)
    roles = permissions.roles_of(request.user)
    if request.method == "GET":
        if kind != "destroy" or not permissions.may(roles, kind, env):
            raise Http404("no such page")
        return render(
            request,
            "environments/confirm.html",
            {
                "env": env,
                "row": dashboard.row(env, roles, timezone.now()),
                "next": _back(request, env),
            },
        )
    params = {
        "hours": request.POST.get("hours", 24),
        "reason": request.POST.get("reason") or (request.htmx.prompt if request.htmx else "") or "",
    }
    try:
        action = lifecycle.request_action(request.user, env, kind, params)
    except lifecycle.ActionError as exc:
        if request.htmx:
            response = render(
                request,
                "environments/home.html#flash",
                {"flash": str(exc), "flash_level": "error"},
                status=exc.status,
            )
            return reswap(retarget(response, "#flash"), "innerHTML")
        if exc.status == 403:
            return HttpResponse(str(exc), status=403, content_type="text/plain")
        messages.error(request, str(exc))
        return HttpResponseRedirect(_back(request, env))
    text = f"{action.kind}: {action.message or 'requested'} ({lifecycle.describe(env)})"
    if request.htmx:
        env.refresh_from_db()
        return render(
            request,
            "environments/home.html#action-result",
            {
                "row": dashboard.row(env, roles, timezone.now()),
                "flash": text,
                "flash_level": "ok",
                "back": request.htmx.current_url_abs_path or "/",
            },
        )
    messages.success(request, text)
    return HttpResponseRedirect(_back(request, env))


@login_required
def tokens(request: Request) -> HttpResponse:
    """The user's API tokens for CI: create (shown once), list, revoke."""
    raw = None
    if request.method == "POST":
        if request.POST.get("revoke"):
            deleted, _ = ApiToken.objects.filter(
                user=request.user, pk=request.POST["revoke"]
            ).delete()
            if deleted:
                messages.success(request, "Token revoked.")
            return HttpResponseRedirect(reverse("tokens"))
        name = request.POST.get("name", "").strip()[:100] or "ci"
        _, raw = ApiToken.issue(request.user, name)
    response = render(
        request,
        "environments/tokens.html",
        {"tokens": ApiToken.objects.filter(user=request.user).order_by("-created_at"), "raw": raw},
    )
    response["Cache-Control"] = "no-store"  # the new token is on this page once
    return response
