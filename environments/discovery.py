"""Discovery: which repositories and PRs have environments, read from the ApplicationSets alone.

No double configuration: the Pull Request generators name the GitHub repositories, and
rendering an ApplicationSet's template with a PR's parameters (as Argo CD does) names the
Applications, namespaces and servers that PR gets, before Argo CD has made any of them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from environments import argo_templates

IN_CLUSTER = "https://kubernetes.default.svc"
DEFAULT_REQUEUE_SECONDS = 30 * 60
GITHUB_API = "https://api.github.com"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HELM_RELEASE_MAX = 53
# `{{branch}}`, `{{ .branch }}` or `{{.branch | lower}}`: the raw head ref, not the slug.
RAW_BRANCH = re.compile(r"\{\{-?\s*\.?branch\s*(\||-?\}\})")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One Pull Request generator of one ApplicationSet, with what its template makes."""

    applicationset: str
    uid: str
    owner: str
    repo: str
    api_url: str
    labels: tuple[str, ...]
    filters: tuple[Obj, ...]
    values: Obj
    requeue_seconds: int
    go_template: bool
    options: tuple[str, ...]
    template: Obj
    flavor: str  # "namespace" or "vcluster"
    role: str  # "app" or "cluster" (the vcluster itself)
    # Managed mode: a Plugin generator that asks envportal which PRs get an environment.
    managed: bool = False
    include_drafts: bool = True

    @functools.cached_property
    def rendering_key(self) -> str:
        """Everything of the generator that rendering reads (same key: same Application)."""
        return json.dumps(
            [self.template, self.values, self.go_template, self.options, self.role],
            sort_keys=True,
            default=str,
        )


@dataclass(frozen=True)
class PullParams:
    """What a PR contributes to a template (as the generator reads it from GitHub)."""

    number: int
    branch: str
    base_branch: str
    head_sha: str
    author: str
    title: str
    labels: tuple[str, ...]


@dataclass
class Expected:
    """An Application that a Source makes for a PR, rendered from the template."""

    source: Source
    name: str
    namespace: str
    server: str
    problems: list[str] = field(default_factory=list)


def is_vcluster_source(spec: Obj) -> bool:
    source = spec.get("source") or {}
    return source.get("chart") == "vcluster" or str(source.get("path", "")).rstrip("/").endswith(
        "vcluster"
    )


def _targets_host(spec: Obj) -> bool:
    destination = spec.get("destination") or {}
    server = str(destination.get("server") or "").rstrip("/")
    name = str(destination.get("name") or "")
    return server in ("", IN_CLUSTER) and name in ("", "in-cluster")


def _merge(base: Obj, override: Obj) -> Obj:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif value not in (None, "", [], {}):
            merged[key] = value
    return merged


def _plugin_generator(generator: Obj, plugin_configmap: str) -> Obj | None:
    """envportal's Plugin generator as a Pull Request generator's shape, or None."""
    plugin = generator.get("plugin") or {}
    if not plugin_configmap or (plugin.get("configMapRef") or {}).get("name") != plugin_configmap:
        return None
    parameters = (plugin.get("input") or {}).get("parameters") or {}
    owner, _, repo = str(parameters.get("repository") or "").partition("/")
    if not owner or not repo:
        return None
    label = str(parameters.get("label") or "")
    return {
        "github": {"owner": owner, "repo": repo, "labels": [label] if label else []},
        "values": plugin.get("values") or {},
        "requeueAfterSeconds": plugin.get("requeueAfterSeconds"),
        "template": plugin.get("template"),
        "managed": True,
        "include_drafts": str(parameters.get("include_drafts", "true")).lower()
        not in ("false", "0", "no"),
    }


def sources(
    applicationsets: list[Obj], default_api: str = GITHUB_API, plugin_configmap: str = ""
) -> list[Source]:
    """Every GitHub Pull Request generator, and every Plugin generator that asks envportal
    (its ConfigMap is `plugin_configmap`), classified by the flavour its template makes.

    A generator without `api` uses github.com, which for envportal is `GITHUB_API_URL`.
    """
    found: list[Source] = []
    for appset in applicationsets:
        spec = appset.get("spec") or {}
        for generator in spec.get("generators") or []:
            pull_request = (
                generator.get("pullRequest") or _plugin_generator(generator, plugin_configmap) or {}
            )
            github = pull_request.get("github")
            if not github or not github.get("owner") or not github.get("repo"):
                continue
            template = spec.get("template") or {}
            if pull_request.get("template"):
                template = _merge(template, pull_request["template"])
            app_spec = template.get("spec") or {}
            role = "cluster" if is_vcluster_source(app_spec) else "app"
            flavor = "vcluster" if role == "cluster" or not _targets_host(app_spec) else "namespace"
            found.append(
                Source(
                    applicationset=appset["metadata"]["name"],
                    uid=appset["metadata"].get("uid", ""),
                    owner=str(github["owner"]),
                    repo=str(github["repo"]),
                    api_url=str(github.get("api") or default_api).rstrip("/"),
                    labels=tuple(github.get("labels") or ()),
                    filters=tuple(pull_request.get("filters") or ()),
                    values=dict(pull_request.get("values") or {}),
                    requeue_seconds=int(
                        pull_request.get("requeueAfterSeconds") or DEFAULT_REQUEUE_SECONDS
                    ),
                    go_template=bool(spec.get("goTemplate")),
                    options=tuple(spec.get("goTemplateOptions") or ()),
                    template=template,
                    flavor=flavor,
                    role=role,
                    managed=bool(pull_request.get("managed")),
                    include_drafts=bool(pull_request.get("include_drafts", True)),
                )
            )
    # An app sent to another server is a vcluster app only when its repo also makes vclusters.
    makes_vclusters = {(s.owner.lower(), s.repo.lower()) for s in found if s.role == "cluster"}
    return [
        s
        if s.flavor == "namespace"
        or s.role == "cluster"
        or (s.owner.lower(), s.repo.lower()) in makes_vclusters
        else Source(**{**s.__dict__, "flavor": "namespace"})
        for s in found
    ]


def selects(source: Source, pull: PullParams, held: bool = False, draft: bool = False) -> bool:
    """Whether the generator yields this PR: all its labels, and any filter matching. In
    managed mode also: not held back (destroyed, expired) and, if so asked, not a draft."""
    if not set(source.labels) <= set(pull.labels):
        return False
    if source.managed and (held or (draft and not source.include_drafts)):
        return False
    if not source.filters:
        return True
    checks = {
        "branchMatch": pull.branch,
        "targetBranchMatch": pull.base_branch,
        "titleMatch": pull.title,
    }
    for rule in source.filters:
        try:
            if all(
                re.search(str(rule[key]), value) for key, value in checks.items() if rule.get(key)
            ):
                return True
        except re.error:
            continue
    return False


def label_problem(value: str, what: str) -> str | None:
    if not value:
        return f"{what} is empty"
    if len(value) > 63:
        return f"{what} `{value}` is {len(value)} characters (at most 63)"
    if not DNS_LABEL.match(value):
        return (
            f"{what} `{value}` is not a valid Kubernetes name (lowercase letters, digits and `-`)"
        )
    return None


def subdomain_problem(value: str, what: str) -> str | None:
    if not value:
        return f"{what} is empty"
    if len(value) > 253:
        return f"{what} `{value}` is {len(value)} characters (at most 253)"
    if not DNS_SUBDOMAIN.match(value):
        return f"{what} `{value}` is not a valid Kubernetes name (lowercase, digits, `-`, `.`)"
    return None


RENDERED_MAX = 50_000  # rendered Applications kept between syncs (a few hundred bytes each)
_rendered: dict[tuple[str, PullParams], Expected] = {}


def expected(source: Source, pull: PullParams) -> Expected:
    """Render the ApplicationSet template for `pull` and pre-flight-check the names it makes.
    A worker renders each (template, PR) once: re-syncs with nothing changed reuse it."""
    key = (source.rendering_key, pull)
    cached = _rendered.get(key)
    if cached is None:
        cached = _render(source, pull)
        if len(_rendered) >= RENDERED_MAX:
            _rendered.pop(next(iter(_rendered)))  # the oldest
        _rendered[key] = cached
    return dataclasses.replace(cached, source=source, problems=list(cached.problems))


def _render(source: Source, pull: PullParams) -> Expected:
    params = argo_templates.pull_request_params(
        number=pull.number,
        branch=pull.branch,
        target_branch=pull.base_branch,
        head_sha=pull.head_sha,
        author=pull.author,
        title=pull.title,
        labels=list(pull.labels),
        go_template=source.go_template,
    )
    params.update(source.values)
    try:
        rendered = argo_templates.render(
            source.template, params, source.go_template, source.options
        )
    except argo_templates.TemplateError as exc:
        return Expected(
            source, "", "", "", [f"the template of `{source.applicationset}` fails: {exc}"]
        )
    spec = rendered.get("spec") or {}
    destination = spec.get("destination") or {}
    result = Expected(
        source,
        name=str((rendered.get("metadata") or {}).get("name") or ""),
        namespace=str(destination.get("namespace") or ""),
        server=str(destination.get("server") or "").rstrip("/"),
    )
    checks = [(result.name, subdomain_problem(result.name, "Application name"))]
    if result.namespace:
        checks.append((result.namespace, label_problem(result.namespace, "namespace")))
    if source.role == "cluster":
        # The Helm release is the Application's name; vcluster names its Service after it.
        checks.append((result.name, label_problem(result.name, "vcluster Service name")))
        if len(result.name) > HELM_RELEASE_MAX:
            checks.append(
                (
                    result.name,
                    f"Helm release name `{result.name}` is "
                    f"{len(result.name)} characters (at most {HELM_RELEASE_MAX})",
                )
            )
    bad = [(name, problem) for name, problem in checks if problem]
    problems = list(dict.fromkeys(problem for _, problem in bad))
    if bad and not DNS_LABEL.match(pull.branch) and RAW_BRANCH.search(str(source.template)):
        problems.insert(
            0,
            f"branch name `{pull.branch}` makes an invalid Kubernetes name `{bad[0][0]}` "
            "(use `{{branch_slug}}` in the ApplicationSet template)",
        )
    result.problems = problems
    return result


def owned_by(app: Obj, uid: str) -> bool:
    return any(
        ref.get("uid") == uid for ref in app.get("metadata", {}).get("ownerReferences") or []
    )
