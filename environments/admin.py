"""The Django admin for platform engineers: repositories to tune, state to inspect."""

from __future__ import annotations

from django.contrib import admin

from environments.models import (
    ApiToken,
    ClusterSecret,
    Environment,
    EnvironmentApp,
    Event,
    PullRequest,
    Repository,
    SyncStatus,
    WebhookDelivery,
)


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = (
        "full_name",
        "enabled",
        "opt_in_label",
        "default_ttl_hours",
        "max_ttl_hours",
        "pulls_synced_at",
    )
    list_filter = ("enabled",)
    list_editable = ("enabled", "default_ttl_hours", "max_ttl_hours")
    search_fields = ("owner", "name")
    readonly_fields = ("applicationsets", "discovered_at", "pulls_synced_at")


class EnvironmentInline(admin.TabularInline):
    model = Environment
    extra = 0
    fields = ("flavor", "state", "reason", "deployed_sha", "expires_at", "pinned")
    readonly_fields = ("flavor", "state", "reason", "deployed_sha")
    show_change_link = True


@admin.register(PullRequest)
class PullRequestAdmin(admin.ModelAdmin):
    list_display = ("__str__", "title", "author", "branch", "state", "draft", "updated_at")
    list_filter = ("state", "draft", "repository")
    search_fields = ("title", "branch", "author", "number")
    list_select_related = ("repository",)
    readonly_fields = ("repository", "number", "head_sha", "last_seen_at", "updated_at")
    inlines = (EnvironmentInline,)


class AppInline(admin.TabularInline):
    model = EnvironmentApp
    extra = 0
    can_delete = False
    fields = ("name", "role", "sync", "health", "operation_phase", "operation_message", "exists")
    readonly_fields = fields


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ("__str__", "state", "reason", "deployed_sha", "expires_at", "pinned")
    list_filter = ("state", "flavor", "pinned", "pull_request__repository")
    search_fields = ("pull_request__title", "pull_request__branch", "namespace")
    list_select_related = ("pull_request__repository",)
    readonly_fields = (
        "pull_request",
        "flavor",
        "state",
        "reason",
        "health",
        "sync",
        "deployed_sha",
        "url",
        "namespace",
        "created_at",
        "state_changed_at",
        "last_seen_at",
    )
    inlines = (AppInline,)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "kind", "message")
    list_filter = ("kind", "actor")
    search_fields = ("message",)
    readonly_fields = ("environment", "pull_request", "at", "actor", "kind", "message", "details")


@admin.register(SyncStatus)
class SyncStatusAdmin(admin.ModelAdmin):
    """Freshness of GitHub and Kubernetes data, and GitHub's rate-limit budget."""

    list_display = ("key", "last_success_at", "last_error", "budget", "backoff_until")
    readonly_fields = (
        "key",
        "last_success_at",
        "last_attempt_at",
        "last_error",
        "details",
        "backoff_until",
    )

    @admin.display(description="rate-limit budget")
    def budget(self, obj: SyncStatus) -> str:
        if "remaining" not in obj.details:
            return "—"
        details = obj.details
        reset = details.get("reset_at")
        return f"{details['remaining']} / {details.get('limit', '?')} (resets {reset})"


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("received_at", "event", "action", "repository", "delivery_id")
    list_filter = ("event",)
    readonly_fields = ("delivery_id", "event", "action", "repository", "received_at")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created with `manage.py create_api_token`; only their prefix is shown here."""

    list_display = ("prefix", "user", "name", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at")
    readonly_fields = ("user", "prefix", "created_at", "last_used_at")

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(ClusterSecret)
class ClusterSecretAdmin(admin.ModelAdmin):
    """Secret sync status per vcluster environment: server and fingerprint, never the keys."""

    list_display = ("secret_name", "environment", "state", "server", "fingerprint", "synced_at")
    list_filter = ("state",)
    list_select_related = ("environment__pull_request__repository",)
    readonly_fields = (
        "environment",
        "secret_name",
        "source",
        "server",
        "fingerprint",
        "state",
        "message",
        "synced_at",
        "updated_at",
    )

    def has_add_permission(self, request: object) -> bool:
        return False
