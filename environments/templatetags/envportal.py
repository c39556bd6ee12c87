"""`{% sync_status %}`: GitHub/Kubernetes freshness and rate limit, for the admin index."""

from __future__ import annotations

from typing import Any

from django import template

from environments import sync

register = template.Library()


@register.inclusion_tag("admin/sync_status.html")
def sync_status() -> dict[str, Any]:
    return {"freshness": sync.freshness()}
