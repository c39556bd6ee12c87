"""Wait until a PR's environment runs the PR's head commit: for CI jobs that test against it."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from environments.models import Environment, PullRequest, Repository

# States an environment does not come back from by waiting.
FINAL_STATES = (Environment.State.INVALID, Environment.State.DESTROYED, Environment.State.EXPIRED)


def find_environment(owner: str, name: str, number: int, flavor: str) -> Environment:
    """The environment, or a CommandError (exit 2) naming what is unknown."""
    env = (
        Environment.objects.select_related("pull_request__repository")
        .filter(
            pull_request__repository__owner__iexact=owner,
            pull_request__repository__name__iexact=name,
            pull_request__number=number,
            flavor=flavor,
        )
        .first()
    )
    if env is not None:
        return env
    if not Repository.objects.filter(owner__iexact=owner, name__iexact=name).exists():
        raise CommandError(f"unknown repository {owner}/{name}", returncode=2)
    if not PullRequest.objects.filter(
        repository__owner__iexact=owner, repository__name__iexact=name, number=number
    ).exists():
        raise CommandError(f"unknown pull request {owner}/{name}#{number}", returncode=2)
    raise CommandError(f"{owner}/{name}#{number} has no {flavor} environment", returncode=2)


def describe(env: Environment) -> str:
    head = env.pull_request.head_sha[:7]
    deployed = env.deployed_sha[:7] or "nothing"
    line = f"{env.state} (deployed {deployed}, head {head})"
    return f"{line}: {env.reason}" if env.reason else line


class Command(BaseCommand):
    help = (
        "Wait until the environment of owner/repo#NUMBER is ready and runs the PR's head "
        "commit, then print its URL. Exit 1 on timeout, 2 when it cannot become ready."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="owner/name")
        parser.add_argument("number", type=int, help="pull request number")
        parser.add_argument("--flavor", required=True, choices=Environment.Flavor.values)
        parser.add_argument("--timeout", type=float, required=True, help="seconds")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
        parser.add_argument(
            "--sync", action="store_true", help="sync GitHub and the cluster every round"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        owner, _, name = options["repository"].partition("/")
        if not owner or not name:
            raise CommandError("repository must be owner/name", returncode=2)
        number, flavor = options["number"], options["flavor"]
        deadline = time.monotonic() + options["timeout"]
        last_line = ""
        while True:
            if options["sync"]:
                # Imported here: it loads the GitHub and Kubernetes clients, which polling
                # the database alone does not need.
                from environments.sync import sync_all

                sync_all()
            env = find_environment(owner, name, number, flavor)
            line = describe(env)
            if line != last_line:
                self.stdout.write(line)
                last_line = line
            if (
                env.state == Environment.State.READY
                and env.deployed_sha == env.pull_request.head_sha
            ):
                self.stdout.write(env.url)
                return
            if env.state in FINAL_STATES:
                raise CommandError(f"environment is {env.state}: {env.reason}", returncode=2)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandError(
                    f"timed out after {options['timeout']:g}s; last state {env.state}: "
                    f"{env.reason}",
                    returncode=1,
                )
            time.sleep(min(options["interval"], remaining))
