from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from environments import sync
from environments.models import Environment, Event
from environments.tasks import HEARTBEAT_KEY


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Open PRs' environments with their state, and how fresh that knowledge is."""
    environments = (
        Environment.objects.filter(pull_request__state="open")
        .select_related("pull_request__repository")
        .order_by(
            "pull_request__repository__owner",
            "pull_request__repository__name",
            "-pull_request__number",
            "flavor",
        )
    )
    return render(
        request,
        "environments/home.html",
        {
            "environments": environments,
            "freshness": sync.freshness(),
            "heartbeat": cache.get(HEARTBEAT_KEY),
        },
    )


@login_required
def environment_detail(
    request: HttpRequest, owner: str, repo: str, number: int, flavor: str
) -> HttpResponse:
    """One environment: its Argo CD applications, cluster-secret sync and timeline."""
    env = get_object_or_404(
        Environment.objects.select_related("pull_request__repository", "cluster_secret"),
        pull_request__repository__owner__iexact=owner,
        pull_request__repository__name__iexact=repo,
        pull_request__number=number,
        flavor=flavor,
    )
    events = Event.objects.filter(
        Q(environment=env) | Q(pull_request=env.pull_request, environment=None)
    )[:50]
    return render(
        request,
        "environments/detail.html",
        {
            "env": env,
            "apps": env.apps.all(),
            "events": events,
            "cluster_secret": getattr(env, "cluster_secret", None),
        },
    )
