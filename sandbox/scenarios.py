"""Scenarios: what the simulated world holds when it starts, and how it moves on its own."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox.controllers import APPLICATIONSETS, CONFIGMAPS, NAMESPACES, SECRETS
from sandbox.kube import KIND_BY_PLURAL
from sandbox.reference import reference_path
from sandbox.world import World

APPPROJECTS = KIND_BY_PLURAL[("argoproj.io", "appprojects")]
SEED_FILE = Path(
    os.environ.get("SANDBOX_SEED")
    or reference_path("seed/applicationsets.yaml", "applicationsets.yaml")
)
SEED_OWNER, SEED_REPO = "a1tan", "app-ephemeraltest"


def seed_applicationsets() -> list[dict[str, Any]]:
    """The reference setup's three ApplicationSets, exactly as written."""
    return [doc for doc in yaml.safe_load_all(SEED_FILE.read_text()) if doc]


def bootstrap(world: World) -> None:
    """What a cluster with Argo CD installed has before any ApplicationSet."""
    cluster, ns = world.cluster, world.argocd_namespace
    for name in ("default", "kube-system", "kube-public", ns):
        cluster.create(NAMESPACES, "", {"metadata": {"name": name}})
    cluster.create(
        APPPROJECTS,
        ns,
        {
            "metadata": {"name": "default"},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
    )
    cluster.create(
        SECRETS,
        ns,
        {
            "metadata": {
                "name": "argocd-secret",
                "labels": {"app.kubernetes.io/part-of": "argocd"},
            },
            "stringData": {
                "server.secretkey": "sandbox-not-a-secret",
                "plugin.envportal.token": world.plugin_token,
            },
        },
    )
    cluster.create(
        CONFIGMAPS,
        ns,
        {"metadata": {"name": "argocd-cm", "labels": {"app.kubernetes.io/part-of": "argocd"}}},
    )


def storefront_applicationset() -> dict[str, Any]:
    """A second team's ApplicationSet: goTemplate, `branch_slug`, and an opt-in label."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "storefront-previews", "namespace": "argocd"},
        "spec": {
            "goTemplate": True,
            "goTemplateOptions": ["missingkey=error"],
            "generators": [
                {
                    "pullRequest": {
                        "github": {"owner": "acme", "repo": "storefront", "labels": ["preview"]},
                        "requeueAfterSeconds": 180,
                    }
                }
            ],
            "template": {
                "metadata": {"name": "storefront-{{.branch_slug}}-{{.number}}"},
                "spec": {
                    "project": "default",
                    "source": {
                        "repoURL": "https://github.com/acme/storefront.git",
                        "targetRevision": "{{.head_sha}}",
                        "path": "charts/storefront",
                        "helm": {
                            "parameters": [{"name": "image.tag", "value": "pull-{{.head_sha}}"}]
                        },
                    },
                    "destination": {
                        "server": "https://kubernetes.default.svc",
                        "namespace": "storefront-pr-{{.number}}",
                    },
                    "syncPolicy": {
                        "automated": {"prune": True, "selfHeal": True},
                        "syncOptions": ["CreateNamespace=true"],
                    },
                },
            },
        },
    }


@dataclass
class DemoPR:
    owner: str
    repo: str
    branch: str
    title: str
    author: str
    labels: tuple[str, ...] = ()
    draft: bool = False
    fault: str = ""  # what the application controller does to its apps
    push_after_sync: bool = False


DEMO_PRS = [
    DemoPR(SEED_OWNER, SEED_REPO, "login-page", "Add the new login page", "maria"),
    DemoPR(
        SEED_OWNER,
        SEED_REPO,
        "checkout-v2",
        "Checkout v2 behind a flag",
        "kenji",
        fault="progressing",
    ),
    DemoPR(SEED_OWNER, SEED_REPO, "payments", "Switch payment provider", "amara", fault="degraded"),
    DemoPR(SEED_OWNER, SEED_REPO, "feature/login", "SSO login (branch name with a slash)", "lucas"),
    DemoPR(SEED_OWNER, SEED_REPO, "search", "Faster search results", "priya"),
    DemoPR(
        SEED_OWNER,
        SEED_REPO,
        "dark-mode",
        "Dark mode",
        "maria",
        fault="manual-sync",
        push_after_sync=True,
    ),
    DemoPR(SEED_OWNER, SEED_REPO, "docs-update", "Docs: how to run locally", "tom", draft=True),
    DemoPR(SEED_OWNER, SEED_REPO, "api-limits", "Rate-limit the public API", "kenji"),
    DemoPR("acme", "storefront", "feature/cart-redesign", "Cart redesign", "sofia", ("preview",)),
    DemoPR(
        "acme",
        "storefront",
        "bugfix/Price_Rounding",
        "Fix price rounding",
        "omar",
        ("preview", "bug"),
    ),
    DemoPR(
        "acme",
        "storefront",
        "experiment/new-search",
        "Experiment: new search (no preview)",
        "sofia",
    ),
    DemoPR(
        "acme",
        "storefront",
        "release/2.4",
        "Release 2.4",
        "omar",
        ("preview",),
        fault="sync-failed",
    ),
]


def app_names(pr: DemoPR, number: int) -> list[str]:
    if pr.repo == SEED_REPO:
        return [
            f"sampleapp-ns-{pr.branch}-{number}",
            f"cluster-{pr.branch}-{number}",
            f"sampleapp-{pr.branch}-{number}",
        ]
    from environments.argo_templates import slugify

    return [f"storefront-{slugify(pr.branch)}-{number}"]


MANAGED_EXAMPLE = Path(__file__).resolve().parent.parent / (
    "charts/envportal/examples/managed-applicationsets.yaml"
)
MANAGED_OWNER, MANAGED_REPO = "acme", "checkout"


def install_managed(world: World, repository: str, plugin_url: str) -> list[dict[str, Any]]:
    """The chart's managed-mode example for `repository`, its ConfigMap pointing at the
    portal (`plugin_url`): the plugin ConfigMap and three ApplicationSets, created."""
    text = MANAGED_EXAMPLE.read_text().replace("your-org/your-app", repository)
    text = text.replace("your-app", repository.split("/", 1)[1])
    documents = [d for d in yaml.safe_load_all(text) if d]
    made = []
    for document in documents:
        if document["kind"] == "ConfigMap":
            document["data"]["baseUrl"] = plugin_url.rstrip("/")
            document["data"]["requestTimeout"] = "5"
            world.cluster.create(CONFIGMAPS, world.argocd_namespace, document)
        else:
            created, _warnings = world.cluster.create(
                APPLICATIONSETS, world.argocd_namespace, document
            )
            made.append(created)
    return made


def load_demo(
    world: World, evolve: bool = True, seed: int = 1, plugin_url: str | None = None
) -> None:
    bootstrap(world)
    github = world.github
    github.add_repo(SEED_OWNER, SEED_REPO)
    github.add_repo(SEED_OWNER, "ephemeralcluster")
    github.add_repo("acme", "storefront")
    for appset in [*seed_applicationsets(), storefront_applicationset()]:
        world.cluster.create(APPLICATIONSETS, world.argocd_namespace, appset)
    if plugin_url:
        # A third team in managed mode: envportal's plugin generator decides what runs.
        github.add_repo(MANAGED_OWNER, MANAGED_REPO)
        install_managed(world, f"{MANAGED_OWNER}/{MANAGED_REPO}", plugin_url)
        for branch, title, author in [
            ("one-click-pay", "One-click pay", "sofia"),
            ("Feature/Gift_Cards", "Gift cards (a branch slug keeps names valid)", "omar"),
        ]:
            github.open_pr(MANAGED_OWNER, MANAGED_REPO, branch, title, author)
    pending_pushes = []
    for pr in DEMO_PRS:
        opened = github.open_pr(
            pr.owner, pr.repo, pr.branch, pr.title, pr.author, labels=pr.labels, draft=pr.draft
        )
        for name in app_names(pr, opened["number"]):
            if pr.fault:
                world.apps.set_fault(name, pr.fault)
        if pr.push_after_sync:
            pending_pushes.append((pr, opened["number"]))
    if pending_pushes:
        world.tick_hooks.append(PushAfterSync(world, pending_pushes))
    if evolve:
        world.tick_hooks.append(DemoEvolution(world, random.Random(seed)))  # noqa: S311


@dataclass
class PushAfterSync:
    """Push a new commit once a PR's first revision is deployed (a deploy then lags the head)."""

    world: World
    pending: list[tuple[DemoPR, int]]
    done: bool = False

    def __call__(self) -> None:
        if self.done:
            return
        delay = self.world.timing.sync + self.world.timing.health + 1
        if not hasattr(self, "_started"):
            self._started = time.monotonic()
        if time.monotonic() - self._started < delay:
            return
        for pr, number in self.pending:
            self.world.github.push(pr.owner, pr.repo, number)
        self.done = True


@dataclass
class DemoEvolution:
    """Now and then: a push to an open PR, a new PR, or a PR merged, so the dashboard moves."""

    world: World
    rng: random.Random
    every: float = 45.0
    last: float = field(default_factory=time.monotonic)
    opened: list[tuple[str, str, int]] = field(default_factory=list)

    def __call__(self) -> None:
        if time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        github = self.world.github
        roll = self.rng.random()
        if roll < 0.6:
            owner, repo = self.rng.choice([(SEED_OWNER, SEED_REPO), ("acme", "storefront")])
            open_prs = [p for p in github.list_open(owner, repo) or [] if not p["draft"]]
            if open_prs:
                github.push(owner, repo, self.rng.choice(open_prs)["number"])
        elif roll < 0.8 or not self.opened:
            topic = self.rng.choice(["onboarding", "invoices", "profile", "reports", "alerts"])
            pr = github.open_pr(
                SEED_OWNER,
                SEED_REPO,
                f"{topic}-{self.rng.randint(10, 99)}",
                f"Improve {topic}",
                self.rng.choice(["maria", "kenji", "amara", "tom"]),
            )
            self.opened.append((SEED_OWNER, SEED_REPO, pr["number"]))
        else:
            owner, repo, number = self.opened.pop(0)
            github.merge(owner, repo, number)


def load_scale(world: World, repos: int = 20, prs: int = 100) -> None:
    """R repositories with three ApplicationSets each (both flavours), N open PRs over them."""
    bootstrap(world)
    base = seed_applicationsets()
    for r in range(repos):
        owner, repo = "scale", f"repo-{r:02d}"
        world.github.add_repo(owner, repo)
        for appset in base:
            appset = yaml.safe_load(
                yaml.safe_dump(appset)
                .replace("a1tan", owner)
                .replace("app-ephemeraltest", repo)
                .replace("{{branch}}", "{{branch_slug}}")
            )
            appset["metadata"]["name"] = f"{repo}-{appset['metadata']['name']}"
            appset["spec"]["template"]["metadata"]["name"] = (
                f"{repo}-" + appset["spec"]["template"]["metadata"]["name"]
            )
            world.cluster.create(APPLICATIONSETS, world.argocd_namespace, appset)
    for i in range(prs):
        repo = f"repo-{i % repos:02d}"
        world.github.open_pr("scale", repo, f"feature/scale-{i}", f"Scale PR {i}", f"dev{i % 7}")


SCENARIOS: dict[str, Callable[..., None]] = {
    "demo": load_demo,
    "scale": load_scale,
    "empty": bootstrap,
}
