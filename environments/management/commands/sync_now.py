"""`python manage.py sync_now`: one full synchronous sync, with a summary."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from environments import sync
from environments.models import Environment


class Command(BaseCommand):
    help = "Run one full sync now (discovery, GitHub, cluster) and print a summary."

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        result = sync.sync_all()
        github, cluster = result["github"], result["cluster"]
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"GitHub: {github['repositories']} repositories, {github['requests']} requests "
            f"({github['not_modified']} not modified)"
        )
        if "error" in cluster:
            self.stdout.write(
                self.style.ERROR(f"Kubernetes: {cluster['error']} (kept the last known state)")
            )
        else:
            self.stdout.write(
                f"Kubernetes: {cluster['requests']} list calls, "
                f"{cluster['environments']} environments, {cluster['changed']} changed"
            )
        for error in github["errors"]:
            self.stdout.write(self.style.WARNING(f"GitHub: {error}"))
        counts: dict[str, int] = {}
        for state in Environment.objects.filter(pull_request__state="open").values_list(
            "state", flat=True
        ):
            counts[state] = counts.get(state, 0) + 1
        self.stdout.write(
            "Environments: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
        )
        self.stdout.write(f"Done in {elapsed:.2f} s.")
