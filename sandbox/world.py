"""The whole simulated world: GitHub, the Kubernetes API, and the controllers, on one clock."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import pki
from sandbox.controllers import (
    ApplicationController,
    ApplicationSetController,
    VClusterSimulator,
)
from sandbox.github import GitHub
from sandbox.httpserver import Request, Response, serve, tls_context
from sandbox.kube import Cluster, KubeAPI, kubeconfig

log = logging.getLogger("sandbox")


@dataclass
class Timing:
    """Seconds the simulated controllers take (short for tests and benchmarks)."""

    tick: float = 0.5
    sync: float = 3.0
    health: float = 4.0
    vcluster: float = 3.0


@dataclass
class World:
    argocd_namespace: str = "argocd"
    timing: Timing = field(default_factory=Timing)
    webhook_url: str | None = None
    github_rate_limit: int = 5000

    def __post_init__(self) -> None:
        self.kube_token = secrets.token_urlsafe(24)
        self.github_token = "ghp_" + secrets.token_hex(18)
        self.webhook_secret = secrets.token_hex(20)
        self.plugin_token = secrets.token_urlsafe(24)  # argocd-secret's plugin.envportal.token
        self.cluster = Cluster()
        self.kube = KubeAPI(self.cluster, self.kube_token)
        self.github = GitHub(
            token=self.github_token,
            webhook_secret=self.webhook_secret,
            webhook_url=self.webhook_url,
            rate_limit=self.github_rate_limit,
        )
        self.appsets = ApplicationSetController(self.cluster, self.github, self.argocd_namespace)
        self.apps = ApplicationController(
            self.cluster,
            self.argocd_namespace,
            sync_seconds=self.timing.sync,
            health_seconds=self.timing.health,
        )
        self.vclusters = VClusterSimulator(
            self.cluster, self.argocd_namespace, ready_seconds=self.timing.vcluster
        )
        self.kube_url = ""
        self.github_url = ""
        self._servers: list[Any] = []
        self._stop = threading.Event()
        self._tick_lock = threading.Lock()
        self.tick_hooks: list[Any] = []

    # --- running -------------------------------------------------------------------------

    def start(
        self,
        host: str = "127.0.0.1",
        github_port: int = 0,
        kube_port: int = 0,
        run_controllers: bool = True,
    ) -> None:
        """Serve both APIs; with `run_controllers`, tick the controllers in the background."""
        github_server, self.github_url = serve(self.github, host, github_port)
        self.serving = pki.serving_certificate([host, "localhost", "127.0.0.1"])
        tls = tls_context(self.serving.cert_pem, self.serving.key_pem)
        kube_server, self.kube_url = serve(self._kube_app, host, kube_port, tls=tls)
        self._servers = [github_server, kube_server]
        if run_controllers:
            threading.Thread(target=self._loop, name="sandbox-controllers", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.cluster.closed = True
        with self.cluster.lock:
            self.cluster.changed.notify_all()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.github.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.tick()
            self._stop.wait(max(0.0, self.timing.tick - (time.monotonic() - started)))

    def tick(self) -> None:
        """One pass of every controller (tests call it directly for determinism)."""
        with self._tick_lock:
            for step in (self.appsets.tick, self.apps.tick, self.vclusters.tick, *self.tick_hooks):
                try:
                    step()
                except Exception:
                    log.exception("sandbox controller step failed")

    def settle(self, seconds: float) -> None:
        """Tick until `seconds` of simulated controller time have passed (tests)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.tick()
            time.sleep(min(self.timing.tick, 0.1))
        self.tick()

    # --- configuration for the portal ---------------------------------------------------

    def env(self, kubeconfig_path: Path) -> dict[str, str]:
        return {
            "GITHUB_API_URL": self.github_url,
            "GITHUB_TOKEN": self.github_token,
            "GITHUB_WEBHOOK_SECRET": self.webhook_secret,
            "KUBECONFIG": str(kubeconfig_path),
            "ARGOCD_NAMESPACE": self.argocd_namespace,
            "ARGOCD_PLUGIN_TOKEN": self.plugin_token,
        }

    def write_env_file(self, path: Path) -> dict[str, str]:
        """Write the portal's variables to `path` and a kubeconfig beside it (both 0600)."""
        kubeconfig_path = path.with_name(path.name + ".kubeconfig")
        kubeconfig_path.write_text(kubeconfig(self.kube_url, self.kube_token, self.serving.ca_pem))
        kubeconfig_path.chmod(0o600)
        env = self.env(kubeconfig_path.resolve())
        path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        path.chmod(0o600)
        return env

    # --- control API (kube server, under /_sandbox/) ------------------------------------

    def _kube_app(self, request: Request) -> Response:
        if request.path.startswith("/_sandbox/"):
            return self.control(request)
        return self.kube(request)

    def control(self, request: Request) -> Response:
        """POST /_sandbox/faults {error_rate, modes, latency, deny: [[verb, plural]]},
        POST /_sandbox/apps/<name>/fault {fault}, POST /_sandbox/tick, GET /_sandbox/stats."""
        path = request.path.rstrip("/")
        body = json.loads(request.body or b"{}") if request.method == "POST" else {}
        if path == "/_sandbox/faults" and request.method == "POST":
            self.set_kube_faults(
                error_rate=float(body.get("error_rate", 0)),
                modes=tuple(body.get("modes") or ("500", "429", "timeout")),
                latency=float(body.get("latency", 0)),
                deny={(verb, plural) for verb, plural in body.get("deny") or []},
            )
            return Response.json({"ok": True})
        if path.startswith("/_sandbox/apps/") and path.endswith("/fault"):
            name = path[len("/_sandbox/apps/") : -len("/fault")]
            self.apps.set_fault(name, body.get("fault", ""))
            return Response.json({"ok": True})
        if path == "/_sandbox/tick":
            self.tick()
            return Response.json({"ok": True})
        if path == "/_sandbox/stats":
            return Response.json(
                {
                    "kube": dict(self.kube.stats),
                    "appset_github_requests": self.appsets.github_requests,
                }
            )
        return Response.json({"message": "unknown sandbox control path"}, 404)

    def set_kube_faults(
        self,
        error_rate: float = 0.0,
        modes: tuple[str, ...] = ("500", "429", "timeout"),
        latency: float = 0.0,
        deny: set[tuple[str, str]] | None = None,
    ) -> None:
        faults = self.kube.faults
        faults.error_rate, faults.modes, faults.latency = error_rate, modes, latency
        faults.denied = deny or set()
