"""Actions on environments: extend, pin, unpin, destroy, recreate, redeploy.

`request_action` does the whole job of a user's request: permission check, a durable
`Action` row (the intent), the timeline event, and, for work outside the database, a task
queued after commit. `execute` is what the worker runs; it is safe to run twice.

Without managed mode, destroy and recreate work where every ApplicationSet of the flavour
filters PRs by a label: removing the label from the PR makes the generator stop yielding it,
so Argo CD removes the Applications and does not bring them back; adding it back recreates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from environments import github_gateway, kube_gateway, permissions
from environments.errors import GatewayError, Transient
from environments.models import Action, Environment, Event

log = logging.getLogger(__name__)
K = Action.Kind
QUEUED = {K.DESTROY, K.RECREATE, K.REDEPLOY, K.EXPIRE}
USER_KINDS = {K.EXTEND, K.DESTROY, K.RECREATE, K.REDEPLOY, K.PIN, K.UNPIN}
WARNINGS = [(timedelta(hours=1), "1h", "1 h"), (timedelta(hours=24), "24h", "24 h")]
MAX_EXTEND_HOURS = 24 * 30
CLAIM_LEASE = timedelta(minutes=5)  # longer than run_action's hard time limit (90 s)


class ActionError(Exception):
    """A refused request; `status` is the HTTP answer (400 bad input, 403, 409 not now)."""

    status = 400


class Forbidden(ActionError):
    status = 403


class Refused(ActionError):
    status = 409


def _event(env: Environment, actor: str, kind: str, message: str, **details: Any) -> None:
    Event.objects.create(
        environment=env,
        pull_request=env.pull_request,
        actor=actor,
        kind=kind,
        message=message[:1000],
        details=details,
    )


def describe(env: Environment) -> str:
    pr = env.pull_request
    return f"the {env.flavor} environment of {pr.repository.full_name}#{pr.number}"


def request_action(user: Any, env: Environment, kind: str, params: dict[str, Any]) -> Action:
    """Check, record and start one action; raise ActionError (with its HTTP status) if refused."""
    if kind not in USER_KINDS:
        raise ActionError(f"unknown action `{kind}`")
    roles = permissions.roles_of(user)
    if not permissions.may(roles, kind, env):
        raise Forbidden(f"{roles.username} ({roles.label}) may not {kind} {describe(env)}")
    with transaction.atomic():
        env = (
            Environment.objects.select_for_update(of=("self",))
            .select_related("pull_request__repository")
            .get(pk=env.pk)
        )
        if kind in QUEUED:
            active = env.actions.filter(
                kind=kind, state__in=[Action.State.PENDING, Action.State.RUNNING]
            ).first()
            if active is not None:
                return active  # a double click: the same intent, already on its way
        reason = permissions.blocker(kind, env) or (
            pinned_sibling(env) if kind == K.DESTROY else None
        )
        if reason:
            raise Refused(f"cannot {kind} {describe(env)}: {reason}")
        action = Action(environment=env, kind=kind, actor=roles.username)
        APPLY[kind](env, action, params)
        action.save()
    if kind in QUEUED:
        from environments import tasks  # tasks import this module

        tasks.enqueue(tasks.run_action, action.pk)
    return action


def pinned_sibling(env: Environment) -> str | None:
    """Removing a label takes every flavour that needs it: refuse when one of them is pinned."""
    if permissions.managed(env):
        return None  # managed mode leaves out one flavour only
    label = permissions.destroy_label(env)
    filters = env.pull_request.repository.label_filters
    for other in env.pull_request.environments.exclude(pk=env.pk).filter(pinned=True):
        if other.is_live and filters.get(other.flavor) == label:
            return (
                f"its {other.flavor} environment is pinned and needs the same `{label}` label; "
                "unpin it first (removing the label takes both)"
            )
    return None


def _hours(params: dict[str, Any]) -> int:
    try:
        hours = int(params.get("hours", 24))
    except (TypeError, ValueError):
        raise ActionError("hours must be a whole number") from None
    if not 1 <= hours <= MAX_EXTEND_HOURS:
        raise ActionError(f"hours must be between 1 and {MAX_EXTEND_HOURS}")
    return hours


def new_expiry(env: Environment, hours: int, now: datetime) -> tuple[datetime, bool]:
    """The expiry after extending by `hours`, capped at the repository's maximum from now;
    and whether the cap cut it short."""
    base = max(env.expires_at or now, now)
    limit = now + timedelta(hours=env.pull_request.repository.max_ttl_hours)
    wanted = base + timedelta(hours=hours)
    return min(wanted, limit), wanted > limit


def _extend(env: Environment, action: Action, params: dict[str, Any]) -> None:
    hours = _hours(params)
    now = timezone.now()
    expiry, capped = new_expiry(env, hours, now)
    maximum = env.pull_request.repository.max_ttl_hours
    if env.expires_at and expiry < env.expires_at + timedelta(minutes=1):
        raise Refused(
            f"cannot extend {describe(env)}: it already expires at the repository's maximum "
            f"of {maximum} h from now"
        )
    env.expires_at, env.expiry_warned = expiry, ""
    env.save(update_fields=["expires_at", "expiry_warned"])
    note = f" (capped at the repository's maximum of {maximum} h from now)" if capped else ""
    action.params = {"hours": hours, "expires_at": expiry.isoformat()}
    action.state, action.finished_at = Action.State.DONE, now
    action.message = f"expires {expiry:%Y-%m-%d %H:%M} UTC{note}"
    _event(env, action.actor, "extended", f"extended by {hours} h by {action.actor}{note}")


def _pin(env: Environment, action: Action, params: dict[str, Any]) -> None:
    reason = str(params.get("reason") or "").strip()[:300]
    env.pinned, env.pin_reason = True, reason
    env.save(update_fields=["pinned", "pin_reason"])
    action.params = {"reason": reason}
    action.state, action.finished_at = Action.State.DONE, timezone.now()
    _event(
        env, action.actor, "pinned", f"pinned by {action.actor}" + (f": {reason}" if reason else "")
    )


def _unpin(env: Environment, action: Action, params: dict[str, Any]) -> None:
    now = timezone.now()
    # The lease starts over: unpinning must not make an environment expire on the spot.
    env.pinned, env.pin_reason = False, ""
    env.expires_at = max(
        env.expires_at or now, now + timedelta(hours=env.pull_request.repository.default_ttl_hours)
    )
    env.expiry_warned = ""
    env.save(update_fields=["pinned", "pin_reason", "expires_at", "expiry_warned"])
    action.state, action.finished_at = Action.State.DONE, now
    _event(
        env,
        action.actor,
        "unpinned",
        f"unpinned by {action.actor}; expires {env.expires_at:%Y-%m-%d %H:%M} UTC",
    )


def _destroy(env: Environment, action: Action, params: dict[str, Any]) -> None:
    env.state, env.reason = Environment.State.DESTROYING, f"destroy requested by {action.actor}"
    env.state_changed_at = timezone.now()
    # Managed mode: the plugin's answer leaves the PR out from this commit on.
    env.held = permissions.managed(env)
    env.save(update_fields=["state", "reason", "state_changed_at", "held"])
    if action.kind == K.EXPIRE:
        env.reason = "the lease ended"
        _event(env, "system", "expired", "the lease ended: destroying the environment")
    else:
        _event(env, action.actor, "destroy", f"destroy requested by {action.actor}")


def _recreate(env: Environment, action: Action, params: dict[str, Any]) -> None:
    env.state, env.reason = Environment.State.PENDING, f"recreate requested by {action.actor}"
    env.state_changed_at = timezone.now()
    env.expires_at = timezone.now() + timedelta(hours=env.pull_request.repository.default_ttl_hours)
    env.held, env.expiry_warned = False, ""
    env.save(
        update_fields=["state", "reason", "state_changed_at", "expires_at", "held", "expiry_warned"]
    )
    _event(env, action.actor, "recreate", f"recreate requested by {action.actor}")


def _redeploy(env: Environment, action: Action, params: dict[str, Any]) -> None:
    _event(env, action.actor, "redeploy", f"redeploy requested by {action.actor}")


APPLY: dict[str, Callable[[Environment, Action, dict[str, Any]], None]] = {
    K.EXTEND: _extend,
    K.PIN: _pin,
    K.UNPIN: _unpin,
    K.DESTROY: _destroy,
    K.RECREATE: _recreate,
    K.REDEPLOY: _redeploy,
}


# --- The worker's side -----------------------------------------------------------------------


def execute(action_id: int) -> str:
    """Carry out a queued action. Claims it first (one worker wins); every step is idempotent,
    so a run after a killed worker finishes the job without doing anything twice. Transient
    errors propagate (the task retries); the rest fail the action with the reason."""
    now = timezone.now()
    # One worker at a time: a pending action, or a running one whose worker died (its claim
    # is older than any task may run).
    claimed = (
        Action.objects.filter(pk=action_id)
        .filter(
            Q(state=Action.State.PENDING)
            | Q(state=Action.State.RUNNING, claimed_at__lt=now - CLAIM_LEASE)
            | Q(state=Action.State.RUNNING, claimed_at__isnull=True)
        )
        .update(state=Action.State.RUNNING, attempts=F("attempts") + 1, claimed_at=now)
    )
    if not claimed:
        return "nothing to do"
    action = Action.objects.select_related("environment__pull_request__repository").get(
        pk=action_id
    )
    env = action.environment
    try:
        message = WORK[action.kind](env)
    except Transient:
        # Back in the queue: the task's retry (or resume_actions) claims it again.
        Action.objects.filter(pk=action.pk, state=Action.State.RUNNING).update(
            state=Action.State.PENDING
        )
        raise
    except GatewayError as exc:
        _finish(action, Action.State.FAILED, f"{action.kind} failed: {exc}")
        _event(env, "system", f"{action.kind}-failed", f"{action.kind} failed: {exc}")
        if action.kind in (K.DESTROY, K.EXPIRE):
            Environment.objects.filter(pk=env.pk, state=Environment.State.DESTROYING).update(
                reason=f"destroy failed: {exc}"[:1000]
            )
        return "failed"
    _finish(action, Action.State.DONE, message)
    return message


def _finish(action: Action, state: str, message: str) -> None:
    Action.objects.filter(pk=action.pk).update(
        state=state, message=message[:1000], finished_at=timezone.now()
    )


def _set_label(env: Environment, present: bool) -> str:
    pr, repo = env.pull_request, env.pull_request.repository
    label = permissions.destroy_label(env)
    if not label:
        raise GatewayError(permissions.no_label_explanation(env))
    if present:
        labels = github_gateway.add_label(
            repo.api_url, settings.GITHUB_TOKEN, repo.owner, repo.name, pr.number, label
        )
    else:
        answer = github_gateway.remove_label(
            repo.api_url, settings.GITHUB_TOKEN, repo.owner, repo.name, pr.number, label
        )
        labels = answer if answer is not None else [x for x in pr.labels if x != label]
    # Keep our copy in step now: the next cluster sync must not see the old label set.
    type(pr).objects.filter(pk=pr.pk).update(labels=labels)
    _refresh(env)
    return label


def _refresh(env: Environment) -> None:
    for name in env.pull_request.repository.applicationsets:
        kube_gateway.refresh_applicationset(settings.ARGOCD_NAMESPACE, name)


def _work_destroy(env: Environment) -> str:
    if permissions.managed(env):
        _refresh(env)  # the plugin already leaves it out (env.held)
        return "left out of the plugin generator's answer; Argo CD is removing the applications"
    label = _set_label(env, present=False)
    return f"removed the `{label}` label from the PR; Argo CD is removing the applications"


def _work_recreate(env: Environment) -> str:
    if permissions.managed(env):
        _refresh(env)
        return "back in the plugin generator's answer; Argo CD is creating the applications"
    label = _set_label(env, present=True)
    return f"labelled the PR `{label}`; Argo CD is creating the applications"


def _work_redeploy(env: Environment) -> str:
    names = list(env.apps.filter(exists=True).values_list("name", flat=True))
    for name in names:
        kube_gateway.refresh_application(settings.ARGOCD_NAMESPACE, name, hard=True)
    return f"hard refresh of {len(names)} application(s)"


WORK: dict[str, Callable[[Environment], str]] = {
    K.DESTROY: _work_destroy,
    K.EXPIRE: _work_destroy,
    K.RECREATE: _work_recreate,
    K.REDEPLOY: _work_redeploy,
}


def unfinished(older_than: timedelta = timedelta(minutes=5)) -> list[int]:
    """Actions nobody finished (a worker died, the queue lost them): to run again. A running
    one counts only once its claim is older than any task may run."""
    cutoff = timezone.now() - older_than
    return list(
        Action.objects.filter(
            Q(state=Action.State.PENDING, created_at__lt=cutoff)
            | Q(state=Action.State.RUNNING, claimed_at__lt=timezone.now() - CLAIM_LEASE)
            | Q(state=Action.State.RUNNING, claimed_at__isnull=True, created_at__lt=cutoff)
        ).values_list("pk", flat=True)
    )


def destroying_ids() -> set[int]:
    """Environments with a destroy on its way: a sync keeps them `destroying` meanwhile."""
    return set(
        Action.objects.filter(
            kind__in=[K.DESTROY, K.EXPIRE], state__in=[Action.State.PENDING, Action.State.RUNNING]
        ).values_list("environment_id", flat=True)
    )


def expired_ids() -> set[int]:
    """Environments whose latest destroy or recreate was an expiry: gone means `expired`."""
    latest: dict[int, str] = {}
    rows = (
        # Only environments on their way out: the ones already gone are left alone by syncs.
        Action.objects.filter(
            kind__in=[K.DESTROY, K.EXPIRE, K.RECREATE],
            environment__state=Environment.State.DESTROYING,
        )
        .order_by("created_at", "id")
        .values_list("environment_id", "kind")
    )
    for env_id, kind in rows:
        latest[env_id] = kind
    return {env_id for env_id, kind in latest.items() if kind == K.EXPIRE}


# --- Leases ----------------------------------------------------------------------------------


def expire_due(now: datetime | None = None) -> dict[str, int]:
    """Beat: warn 24 h and 1 h before a lease ends, and expire what is due through the destroy
    path (a durable `expire` action). Where destroy cannot work (observed mode without a label
    filter) the environment is not expired; the timeline says why, once."""
    now = now or timezone.now()
    counts = {"warned": 0, "expired": 0, "refused": 0}
    due_soon = (
        Environment.objects.filter(
            pinned=False,
            pull_request__state="open",
            expires_at__lt=now + WARNINGS[-1][0],
        )
        .exclude(state__in=[Environment.State.DESTROYING, *DEAD])
        .select_related("pull_request__repository")
    )
    for env in due_soon:
        assert env.expires_at is not None
        if env.expires_at > now:
            _warn(env, now, counts)
            continue
        reason = permissions.blocker(K.DESTROY, env, now) or pinned_sibling(env)
        if reason:
            if env.expiry_warned != "refused":
                Environment.objects.filter(pk=env.pk).update(expiry_warned="refused")
                _event(env, "system", "expiry-refused", f"the lease ended but {reason}")
                counts["refused"] += 1
            continue
        if _expire(env, now):
            counts["expired"] += 1
    return counts


DEAD = [Environment.State.DESTROYED, Environment.State.EXPIRED]


def _warn(env: Environment, now: datetime, counts: dict[str, int]) -> None:
    assert env.expires_at is not None
    for within, level, text in WARNINGS:
        if env.expires_at - now <= within:
            if env.expiry_warned in (level, "1h"):
                return  # this warning, or a later one, was given
            claimed = Environment.objects.filter(pk=env.pk, expiry_warned=env.expiry_warned).update(
                expiry_warned=level
            )
            if claimed:
                _event(
                    env,
                    "system",
                    "expiry-warning",
                    f"expires within {text} ({env.expires_at:%Y-%m-%d %H:%M} UTC): extend it "
                    "to keep it",
                )
                counts["warned"] += 1
            return


def _expire(env: Environment, now: datetime) -> bool:
    with transaction.atomic():
        locked = (
            Environment.objects.select_for_update(of=("self",))
            .select_related("pull_request__repository")
            .filter(pk=env.pk, pinned=False, expires_at__lte=now)
            .exclude(state__in=[Environment.State.DESTROYING, *DEAD])
            .first()
        )
        if locked is None:
            return False  # extended, pinned or already on its way meanwhile
        action = Action(environment=locked, kind=K.EXPIRE, actor="system")
        _destroy(locked, action, {})
        locked.reason = f"the lease ended at {locked.expires_at:%Y-%m-%d %H:%M} UTC"
        locked.save(update_fields=["reason"])
        action.save()
    from environments import tasks

    tasks.enqueue(tasks.run_action, action.pk)
    return True
