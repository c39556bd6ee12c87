"""`python manage.py sandbox`: run the simulated GitHub + Kubernetes/Argo CD/vcluster world."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.scenarios import bootstrap, load_demo, load_scale
from sandbox.world import Timing, World


def parse_faults(spec: str) -> dict[str, float]:
    """`kube-error-rate=0.2,github-error-rate=0.1,latency=0.05,github-exhausted=1`."""
    faults: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, value = item.partition("=")
        if key not in {"kube-error-rate", "github-error-rate", "latency", "github-exhausted"}:
            raise CommandError(f"unknown fault {key!r}")
        try:
            faults[key] = float(value or 1)
        except ValueError as exc:
            raise CommandError(f"fault {key} needs a number, got {value!r}") from exc
    return faults


class Command(BaseCommand):
    help = "Run the sandbox: emulated GitHub and Kubernetes APIs, Argo CD and vcluster controllers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scenario", choices=["demo", "scale", "empty"], default="demo")
        parser.add_argument("--repos", type=int, default=20, help="scale: repositories")
        parser.add_argument("--prs", type=int, default=100, help="scale: open pull requests")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--github-port", type=int, default=0, help="0 picks a free port")
        parser.add_argument("--kube-port", type=int, default=0, help="0 picks a free port")
        parser.add_argument(
            "--env-file",
            type=Path,
            required=True,
            help="where to write the variables that point the portal here",
        )
        parser.add_argument("--webhook-url", default=None, help="where GitHub webhooks are POSTed")
        parser.add_argument(
            "--plugin-url",
            default=None,
            help="demo: the portal's base URL; adds a managed-mode repository whose Plugin "
            "generator asks it",
        )
        parser.add_argument("--faults", default="", help="e.g. kube-error-rate=0.2,latency=0.05")
        parser.add_argument("--no-evolve", action="store_true", help="demo: keep the world still")
        parser.add_argument("--fast", action="store_true", help="controllers take ~1 s, not ~10 s")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        faults = parse_faults(options["faults"])
        timing = (
            Timing(tick=0.2, sync=0.5, health=0.5, vcluster=0.5) if options["fast"] else Timing()
        )
        world = World(timing=timing, webhook_url=options["webhook_url"])
        scenario = options["scenario"]
        if scenario == "demo":
            load_demo(world, evolve=not options["no_evolve"], plugin_url=options["plugin_url"])
        elif scenario == "scale":
            load_scale(world, repos=options["repos"], prs=options["prs"])
        else:
            bootstrap(world)
        world.start(options["host"], options["github_port"], options["kube_port"])
        if faults.get("kube-error-rate") or faults.get("latency"):
            world.set_kube_faults(
                error_rate=faults.get("kube-error-rate", 0.0), latency=faults.get("latency", 0.0)
            )
        if faults.get("github-error-rate") or faults.get("github-exhausted"):
            world.github.set_faults(
                error_rate=faults.get("github-error-rate", 0.0),
                exhausted=bool(faults.get("github-exhausted")),
            )
        world.write_env_file(options["env_file"])
        world.tick()
        if options["webhook_url"]:
            world.github.ping()
        self.stdout.write(
            f"sandbox ready: scenario={scenario} github={world.github_url} kube={world.kube_url} "
            f"env-file={options['env_file']}"
        )
        sys.stdout.flush()
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            while not stopped.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        world.stop()
        time.sleep(0.1)
