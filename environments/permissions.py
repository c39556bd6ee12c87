"""Who may do what to an environment: the one place envportal decides it.

Groups (made after every `migrate`): *viewer* reads; *tester* also extends, redeploys and
recreates; *platform* (and superusers) may do everything: destroy any environment, pin and
unpin. A user whose linked GitHub login (Profile) is the PR's author may destroy their own
environment whatever their group. `may` is about the person, `blocker` about the moment:
views answer 403 for the first and 409 for the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from environments.models import Action, Environment

VIEWER, TESTER, PLATFORM = "viewer", "tester", "platform"
ROLES = (VIEWER, TESTER, PLATFORM)
K = Action.Kind
TESTER_ACTIONS = {K.EXTEND, K.REDEPLOY, K.RECREATE}
ORDER = [K.EXTEND, K.REDEPLOY, K.PIN, K.UNPIN, K.DESTROY, K.RECREATE]


@dataclass(frozen=True)
class Roles:
    username: str
    platform: bool
    tester: bool
    github_login: str

    @property
    def label(self) -> str:
        return PLATFORM if self.platform else TESTER if self.tester else VIEWER


def roles_of(user: Any) -> Roles:
    """The user's roles, read once per request (cached on the user object)."""
    cached = getattr(user, "_envportal_roles", None)
    if cached is not None:
        return cached
    if not user.is_authenticated:
        roles = Roles("", False, False, "")
    else:
        groups = set(user.groups.values_list("name", flat=True))
        profile = getattr(user, "profile", None)  # None when the user has no Profile
        platform = user.is_superuser or PLATFORM in groups
        roles = Roles(
            username=user.get_username(),
            platform=platform,
            tester=platform or TESTER in groups,
            github_login=(profile.github_login if profile else "").strip().lower(),
        )
    user._envportal_roles = roles
    return roles


def owns(roles: Roles, env: Environment) -> bool:
    return bool(roles.github_login) and env.pull_request.author.lower() == roles.github_login


def may(roles: Roles, kind: str, env: Environment) -> bool:
    """Whether this person may ever take this action on this environment."""
    if roles.platform:
        return True
    if kind == K.DESTROY:
        return owns(roles, env)
    return kind in TESTER_ACTIONS and roles.tester


def destroy_label(env: Environment) -> str:
    """The label whose removal takes this environment away ("" when there is none)."""
    return str(env.pull_request.repository.label_filters.get(env.flavor, ""))


def managed(env: Environment) -> bool:
    """Whether this flavour's ApplicationSets ask envportal which PRs to deploy."""
    return env.flavor in (env.pull_request.repository.managed_flavors or [])


def no_label_explanation(env: Environment) -> str:
    repo = env.pull_request.repository
    return (
        f"The ApplicationSets of {repo.full_name} ({', '.join(repo.applicationsets)}) select "
        "every open pull request, so Argo CD would recreate a destroyed environment at its "
        "next reconcile. Either add a label filter to their Pull Request generator "
        f"(`github: {{owner: {repo.owner}, repo: {repo.name}, labels: [preview]}}`) and label "
        "the PRs that should have an environment, or switch them to managed mode: replace the "
        "generator with `plugin: {configMapRef: {name: envportal-plugin}, input: {parameters: "
        f"{{repository: {repo.full_name}, flavor: {env.flavor}}}}}, requeueAfterSeconds: 300}}` "
        "(charts/envportal/examples/ has complete ApplicationSets)."
    )


def blocker(kind: str, env: Environment, now: datetime | None = None) -> str | None:
    """Why this action cannot happen right now, or None."""
    now = now or timezone.now()
    pr_open = env.pull_request.state == "open"
    live = env.is_live and env.state != Environment.State.DESTROYING
    if kind in (K.EXTEND, K.REDEPLOY, K.PIN, K.DESTROY) and not pr_open:
        return f"the pull request is {env.pull_request.state}"
    if kind in (K.EXTEND, K.REDEPLOY, K.PIN) and not live:
        return f"the environment is {env.state}"
    if kind == K.REDEPLOY and env.state == Environment.State.INVALID:
        return "its names are invalid, so Argo CD has no applications to refresh"
    if kind == K.EXTEND and env.pinned:
        return "the environment is pinned: it does not expire"
    if kind == K.PIN and env.pinned:
        return "the environment is already pinned"
    if kind == K.UNPIN and not env.pinned:
        return "the environment is not pinned"
    if kind == K.DESTROY:
        if env.state == Environment.State.DESTROYING:
            return "the environment is already being destroyed"
        if not env.is_live:
            return f"the environment is already {env.state}"
        if not destroy_label(env) and not managed(env):
            return no_label_explanation(env)
    if kind == K.RECREATE:
        if env.is_live:
            return f"the environment is {env.state}, not destroyed"
        if not pr_open:
            return f"the pull request is {env.pull_request.state}"
        if not destroy_label(env) and not managed(env):
            return no_label_explanation(env)
    return None


def available(roles: Roles, env: Environment, now: datetime | None = None) -> list[str]:
    """The actions to show this person on this environment now, in display order."""
    return [k for k in ORDER if may(roles, k, env) and blocker(k, env, now) is None]


# Platform engineers run the admin: envportal's models, the periodic tasks, users and groups.
PLATFORM_APPS = ("environments", "django_celery_beat")
PLATFORM_MODELS = (("auth", "user"), ("auth", "group"))


def ensure_role_groups(**kwargs: Any) -> None:
    """After migrate: the three groups exist; platform holds the admin permissions (staff
    status is still set per user)."""
    from django.contrib.auth.models import Group, Permission
    from django.db.models import Q

    groups = {name: Group.objects.get_or_create(name=name)[0] for name in ROLES}
    wanted = Q(content_type__app_label__in=PLATFORM_APPS)
    for app_label, model in PLATFORM_MODELS:
        wanted |= Q(content_type__app_label=app_label, content_type__model=model)
    groups[PLATFORM].permissions.add(*Permission.objects.filter(wanted))
