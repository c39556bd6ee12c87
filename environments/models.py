"""What envportal knows: repositories, their open pull requests, and each PR's environments."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Repository(models.Model):
    """A GitHub repository found in a Pull Request generator of an ApplicationSet."""

    owner = models.CharField(max_length=100)
    name = models.CharField(max_length=100)
    api_url = models.URLField(default="https://api.github.com")
    enabled = models.BooleanField(default=True, help_text="Off: envportal ignores this repository.")
    opt_in_label = models.CharField(
        max_length=100,
        blank=True,
        help_text="The label its ApplicationSets filter PRs by (found by discovery), if any.",
    )
    applicationsets = models.JSONField(
        default=list, blank=True, help_text="Names of the ApplicationSets that generate its PRs."
    )
    default_ttl_hours = models.PositiveIntegerField(default=72)
    max_ttl_hours = models.PositiveIntegerField(
        default=168, help_text="Extend never moves an expiry further than this from now."
    )
    # Per flavour, the label every ApplicationSet of that flavour requires (found by
    # discovery): removing it from a PR takes that environment away, adding it brings it back.
    label_filters = models.JSONField(default=dict, blank=True, editable=False)
    max_environments = models.PositiveIntegerField(
        default=0,
        help_text="Managed mode: at most this many environments per flavour run at once; "
        "later PRs wait in a queue (0: no limit).",
    )
    feedback = models.BooleanField(
        default=True,
        help_text="Keep a comment and a GitHub Deployment per environment on its PRs.",
    )
    renew_on_push = models.BooleanField(
        default=False, help_text="A push to a PR renews its environments' lease (default TTL)."
    )
    # Flavours whose ApplicationSets all use envportal's Plugin generator (managed mode).
    managed_flavors = models.JSONField(default=list, blank=True, editable=False)
    # One ETag per page of the open-PR list: a 304 answer costs no rate limit.
    pulls_etags = models.JSONField(default=dict, blank=True, editable=False)
    pulls_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A webhook asked for an ApplicationSet refresh that no worker has done yet (the intent
    # survives a broker that was down or lost its queue; the cluster sync carries it out).
    refresh_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    discovered_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "repositories"
        ordering = ["owner", "name"]
        constraints = [
            models.UniqueConstraint(fields=["api_url", "owner", "name"], name="unique_repository")
        ]

    def __str__(self) -> str:
        return self.full_name

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def html_url(self) -> str:
        host = "https://github.com"
        if self.api_url.rstrip("/") != "https://api.github.com":
            host = self.api_url.split("/api/")[0].rstrip("/")
        return f"{host}/{self.full_name}"


class PullRequest(models.Model):
    class State(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"
        MERGED = "merged"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="pulls")
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=1024)
    author = models.CharField(max_length=100)
    branch = models.CharField(max_length=255)
    base_branch = models.CharField(max_length=255, default="main")
    head_sha = models.CharField(max_length=64)
    # Earlier heads, newest first (capped): how many pushes a deployed commit is behind.
    head_history = models.JSONField(default=list, blank=True, editable=False)
    labels = models.JSONField(default=list, blank=True)
    draft = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    html_url = models.URLField(max_length=500, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True, help_text="As GitHub reports it.")
    last_seen_at = models.DateTimeField(default=timezone.now)
    # The sticky comment envportal keeps on the PR, and a digest of what it last said.
    feedback_comment_id = models.BigIntegerField(null=True, blank=True, editable=False)
    feedback_digest = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["repository", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["repository", "number"], name="unique_pull_request")
        ]
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"{self.repository.full_name}#{self.number}"


class Environment(models.Model):
    """One flavour of one PR's environment: its namespace, or its virtual cluster."""

    class Flavor(models.TextChoices):
        NAMESPACE = "namespace"
        VCLUSTER = "vcluster"

    class State(models.TextChoices):
        PENDING = "pending"
        PROVISIONING = "provisioning"
        READY = "ready"
        DEGRADED = "degraded"
        OUT_OF_DATE = "out-of-date"
        INVALID = "invalid"
        DESTROYING = "destroying"
        DESTROYED = "destroyed"
        EXPIRED = "expired"

    pull_request = models.ForeignKey(
        PullRequest, on_delete=models.CASCADE, related_name="environments"
    )
    flavor = models.CharField(max_length=10, choices=Flavor.choices)
    state = models.CharField(max_length=15, choices=State.choices, default=State.PENDING)
    reason = models.CharField(max_length=1000, blank=True)
    health = models.CharField(max_length=20, blank=True, help_text="Argo CD health, rolled up")
    sync = models.CharField(max_length=20, blank=True, help_text="Argo CD sync status, rolled up")
    deployed_sha = models.CharField(max_length=64, blank=True)
    url = models.URLField(max_length=500, blank=True)
    namespace = models.CharField(max_length=253, blank=True)
    namespace_exists = models.BooleanField(default=False)
    vcluster_ready = models.BooleanField(
        default=False, help_text="vcluster flavour: its control plane has a ready replica"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    pinned = models.BooleanField(default=False, help_text="Pinned: never expires.")
    pin_reason = models.CharField(max_length=300, blank=True)
    # Its GitHub Deployment (environment `pr-<number>-<flavor>`): id, commit and last status.
    deployment_id = models.BigIntegerField(null=True, blank=True, editable=False)
    deployment_sha = models.CharField(max_length=64, blank=True, editable=False)
    deployment_state = models.CharField(max_length=20, blank=True, editable=False)
    # The last expiry warning given ("24h", "1h"), or "refused" when it cannot expire.
    expiry_warned = models.CharField(max_length=10, blank=True, editable=False)
    held = models.BooleanField(
        default=False,
        help_text="Managed mode: left out of the plugin generator's answer (destroyed or "
        "expired) until recreated.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    state_changed_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="Last seen in the cluster")

    class Meta:
        ordering = ["pull_request", "flavor"]
        constraints = [
            models.UniqueConstraint(fields=["pull_request", "flavor"], name="unique_environment")
        ]
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"{self.pull_request} ({self.flavor})"

    @property
    def is_live(self) -> bool:
        return self.state not in (self.State.DESTROYED, self.State.EXPIRED)


class EnvironmentApp(models.Model):
    """One Argo CD Application of an environment, as last seen."""

    class Role(models.TextChoices):
        APP = "app"
        CLUSTER = "cluster"

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="apps")
    name = models.CharField(max_length=253)
    applicationset = models.CharField(max_length=253, blank=True)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.APP)
    sync = models.CharField(max_length=20, blank=True)
    health = models.CharField(max_length=20, blank=True)
    operation_phase = models.CharField(max_length=20, blank=True)
    operation_message = models.TextField(blank=True)
    conditions = models.JSONField(default=list, blank=True)
    revision = models.CharField(max_length=64, blank=True)
    destination_server = models.CharField(max_length=500, blank=True)
    destination_namespace = models.CharField(max_length=253, blank=True)
    exists = models.BooleanField(
        default=True, help_text="Off: expected from the template, not found"
    )
    # A summary of status.resources: [{kind, namespace, name, status, health}], capped.
    resources = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["environment", "role", "name"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "name"], name="unique_environment_app")
        ]

    def __str__(self) -> str:
        return self.name


class Event(models.Model):
    """The timeline and audit log: who (a user, or "system") did or saw what, when."""

    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    pull_request = models.ForeignKey(
        PullRequest, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, default="system")
    kind = models.CharField(max_length=50)
    message = models.CharField(max_length=1000)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor}: {self.message}"


class SyncStatus(models.Model):
    """Freshness of what envportal knows from one outside system (GitHub or Kubernetes)."""

    key = models.CharField(max_length=200, unique=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=1000, blank=True)
    # GitHub: the rate-limit budget {limit, remaining, reset}; backing off until `backoff_until`.
    details = models.JSONField(default=dict, blank=True)
    backoff_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "sync status"

    def __str__(self) -> str:
        return self.key

    def age(self) -> timedelta | None:
        return timezone.now() - self.last_success_at if self.last_success_at else None

    def is_stale(self, max_age: timedelta) -> bool:
        age = self.age()
        return age is None or age > max_age or bool(self.last_error)


class WebhookDelivery(models.Model):
    """GitHub deliveries already handled: a replayed `X-GitHub-Delivery` is a no-op."""

    delivery_id = models.CharField(max_length=100, unique=True)
    event = models.CharField(max_length=50)
    action = models.CharField(max_length=50, blank=True)
    repository = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event}/{self.action} {self.delivery_id}"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the read API (CI pipelines). Only its hash is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: Any, name: str = "") -> tuple[ApiToken, str]:
        """Create a token; return it with the raw value, which is shown once and never stored."""
        raw = "envp_" + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=raw[:12], key_hash=hash_token(raw))
        return token, raw


class ClusterSecret(models.Model):
    """The Argo CD cluster secret envportal keeps for a vcluster environment.

    Only what is safe to show is stored: never the kubeconfig, certificates, keys or tokens.
    """

    class State(models.TextChoices):
        WAITING = "waiting"
        SYNCED = "synced"
        ERROR = "error"
        CONFLICT = "conflict"
        DELETING = "deleting"
        DELETED = "deleted"

    environment = models.OneToOneField(
        Environment, on_delete=models.CASCADE, related_name="cluster_secret"
    )
    secret_name = models.CharField(max_length=253)
    source = models.CharField(
        max_length=300, blank=True, help_text="namespace/name of vc-<release>"
    )
    server = models.CharField(max_length=500, blank=True)
    fingerprint = models.CharField(max_length=12, blank=True, help_text="First 12 hex of SHA-256")
    state = models.CharField(max_length=10, choices=State.choices, default=State.WAITING)
    message = models.CharField(max_length=1000, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.secret_name


class Profile(models.Model):
    """What envportal knows of a user beyond Django's: the GitHub login that links them to
    their pull requests ("mine", and destroying their own environments)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    github_login = models.CharField(
        max_length=100, blank=True, db_index=True, help_text="Their GitHub username."
    )

    def __str__(self) -> str:
        return self.github_login or str(self.user)


class Action(models.Model):
    """A user's request to change an environment: the durable intent a worker carries out.

    Extend, pin and unpin take effect in the request; destroy, recreate and redeploy are
    `pending` until a worker claims and finishes them (safe to run twice)."""

    class Kind(models.TextChoices):
        EXTEND = "extend"
        DESTROY = "destroy"
        RECREATE = "recreate"
        REDEPLOY = "redeploy"
        PIN = "pin"
        UNPIN = "unpin"
        EXPIRE = "expire"  # the system's destroy when a lease ends

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="actions")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    actor = models.CharField(max_length=150)
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    message = models.CharField(max_length=1000, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker took it")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "kind"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.environment} by {self.actor} ({self.state})"


class Orphan(models.Model):
    """Something in the cluster that belongs to no open PR's environment, found by the sweep:
    a dry-run report for platform engineers, who clean it up from the admin."""

    class Kind(models.TextChoices):
        NAMESPACE = "namespace"
        VCLUSTER_SECRET = "vcluster-secret"  # noqa: S105 - a kind, not a password
        CLUSTER_SECRET = "cluster-secret"  # noqa: S105 - a kind, not a password

    kind = models.CharField(max_length=20, choices=Kind.choices)
    namespace = models.CharField(max_length=253, blank=True)
    name = models.CharField(max_length=253)
    uid = models.CharField(max_length=64, blank=True, help_text="Deleted only if still this object")
    reason = models.CharField(max_length=500)
    removable = models.BooleanField(
        default=True, help_text="Off: deleting it now would leak (Applications still use it)."
    )
    found_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "namespace", "name"], name="unique_orphan")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}".replace(" /", " ")
