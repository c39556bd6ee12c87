"""The Django admin for platform engineers: repositories to tune, state to inspect."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from environments import cleanup, lifecycle
from environments.errors import GatewayError
from environments.models import (
    Action,
    ApiToken,
    ClusterSecret,
    Environment,
    EnvironmentApp,
    Event,
    Orphan,
    Profile,
    PullRequest,
    Repository,
    SyncStatus,
    WebhookDelivery,
)
from environments.sync import STALE_AFTER


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = (
        "full_name",
        "enabled",
        "opt_in_label",
        "label_filters",
        "default_ttl_hours",
        "max_ttl_hours",
        "renew_on_push",
        "feedback",
        "max_environments",
        "managed_flavors",
        "pulls_synced_at",
    )
    list_filter = ("enabled",)
    list_editable = ("enabled", "default_ttl_hours", "max_ttl_hours", "renew_on_push", "feedback")
    search_fields = ("owner", "name")
    readonly_fields = (
        "applicationsets",
        "label_filters",
        "managed_flavors",
        "discovered_at",
        "pulls_synced_at",
    )


class EnvironmentInline(admin.TabularInline):
    model = Environment
    extra = 0
    fields = ("flavor", "state", "reason", "deployed_sha", "expires_at", "pinned")
    readonly_fields = fields  # changed through actions, which keep the timeline
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


def _run(
    request: HttpRequest, queryset: QuerySet[Environment], kind: str, params: dict[str, object]
) -> None:
    """An admin action through the same path as the portal's buttons (checks, timeline)."""
    done, refused = 0, []
    for env in queryset.select_related("pull_request__repository"):
        try:
            lifecycle.request_action(request.user, env, kind, params)
            done += 1
        except lifecycle.ActionError as exc:
            refused.append(str(exc))
    if done:
        messages.success(request, f"{kind}: {done} environment(s)")
    for reason in refused[:10]:
        messages.error(request, reason)


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
        "namespace_exists",
        "vcluster_ready",
        "expires_at",
        "pinned",
        "pin_reason",
        "created_at",
        "state_changed_at",
        "last_seen_at",
    )
    inlines = (AppInline,)
    actions = ("extend_24h", "pin", "unpin", "destroy")

    @admin.action(description="Extend by 24 h")
    def extend_24h(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        _run(request, queryset, "extend", {"hours": 24})

    @admin.action(description="Pin (never expires)")
    def pin(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        _run(request, queryset, "pin", {"reason": "pinned from the admin"})

    @admin.action(description="Unpin")
    def unpin(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        _run(request, queryset, "unpin", {})

    @admin.action(description="Destroy")
    def destroy(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        _run(request, queryset, "destroy", {})


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: to read and search, never to edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor", "kind", "environment", "message")
    list_filter = ("kind", "actor")
    search_fields = ("message", "actor", "pull_request__title", "pull_request__branch")
    list_select_related = ("environment__pull_request__repository",)
    date_hierarchy = "at"


@admin.register(Action)
class ActionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "environment", "actor", "state", "attempts", "message")
    list_filter = ("kind", "state")
    search_fields = ("actor", "message")
    list_select_related = ("environment__pull_request__repository",)


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    verbose_name_plural = "envportal profile"
    fields = ("github_login",)


admin.site.unregister(User)


@admin.register(User)
class EnvportalUserAdmin(UserAdmin):
    """Users and their role groups (viewer, tester, platform) and linked GitHub login."""

    inlines = (ProfileInline,)
    list_display = ("username", "github_login", "roles", "is_staff", "is_active", "last_login")

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).select_related("profile").prefetch_related("groups")

    @admin.display(description="GitHub login")
    def github_login(self, obj: User) -> str:
        profile = getattr(obj, "profile", None)
        return profile.github_login if profile else ""

    @admin.display(description="roles")
    def roles(self, obj: User) -> str:
        return ", ".join(sorted(g.name for g in obj.groups.all())) or "viewer (no group)"


@admin.register(SyncStatus)
class SyncStatusAdmin(admin.ModelAdmin):
    """Freshness of GitHub and Kubernetes data, and GitHub's rate-limit budget."""

    list_display = ("key", "fresh", "last_success_at", "last_error", "budget", "backoff_until")
    readonly_fields = (
        "key",
        "last_success_at",
        "last_attempt_at",
        "last_error",
        "details",
        "backoff_until",
    )

    @admin.display(description="fresh", boolean=True)
    def fresh(self, obj: SyncStatus) -> bool:
        kind = "github" if obj.key.startswith("github:") else obj.key
        return not obj.is_stale(STALE_AFTER.get(kind, timedelta(minutes=5)))

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


@admin.register(Orphan)
class OrphanAdmin(ReadOnlyAdmin):
    """The orphan sweep's dry-run report: select and "Delete from the cluster" to clean up."""

    list_display = ("kind", "namespace", "name", "removable", "reason", "found_at")
    list_filter = ("kind", "removable")
    search_fields = ("namespace", "name")
    actions = ("delete_from_cluster",)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the admin action deletes from the cluster; rows go with it

    @admin.action(description="Delete from the cluster")
    def delete_from_cluster(self, request: HttpRequest, queryset: QuerySet[Orphan]) -> None:
        if (
            not request.user.is_superuser
            and not request.user.groups.filter(name="platform").exists()
        ):
            messages.error(request, "only platform engineers clean up the cluster")
            return
        for orphan in queryset:
            try:
                messages.info(request, cleanup.remove(orphan))
            except GatewayError as exc:
                messages.error(request, f"could not delete {orphan}: {exc}")
