"""Request checks that hold for every page and endpoint."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse


def refuse_nul(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """400 for a path or query string holding a NUL character: no name has one, and
    PostgreSQL refuses it in a query (which would otherwise be a 500)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        query = [part for key, values in request.GET.lists() for part in (key, *values)]
        if "\x00" in request.path or any("\x00" in part for part in query):
            return JsonResponse({"error": "the URL contains a NUL character"}, status=400)
        return get_response(request)

    return middleware
