"""A running sandbox world with the portal's settings pointed at it (through the real clients)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from environments import kube_gateway
from sandbox.controllers import APPLICATIONSETS
from sandbox.scenarios import bootstrap, seed_applicationsets
from sandbox.world import Timing, World

FAST = Timing(tick=0.05, sync=0.2, health=0.2, vcluster=0.2)


@pytest.fixture
def world(settings, tmp_path: Path) -> Iterator[World]:
    """The seed's three ApplicationSets for a1tan/app-ephemeraltest, no PRs yet. Controllers
    run only when a test calls `world.tick()` / `world.settle()`, so every step is deterministic."""
    w = World(timing=FAST)
    bootstrap(w)
    w.github.add_repo("a1tan", "app-ephemeraltest")
    for appset in seed_applicationsets():
        w.cluster.create(APPLICATIONSETS, "argocd", appset)
    w.start(run_controllers=False)
    env = w.write_env_file(tmp_path / "sandbox.env")
    settings.GITHUB_API_URL = env["GITHUB_API_URL"]
    settings.GITHUB_TOKEN = env["GITHUB_TOKEN"]
    settings.GITHUB_WEBHOOK_SECRET = env["GITHUB_WEBHOOK_SECRET"]
    settings.KUBECONFIG = env["KUBECONFIG"]
    settings.ARGOCD_NAMESPACE = "argocd"
    kube_gateway.reset_client()
    yield w
    kube_gateway.reset_client()
    w.stop()
