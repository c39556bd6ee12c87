from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from environments import sync
from environments.models import Environment
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
