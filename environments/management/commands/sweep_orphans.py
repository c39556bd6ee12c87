"""List what belongs to no open PR's environment (a dry run); --delete cleans it up."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from environments import cleanup


class Command(BaseCommand):
    help = "Report namespaces and secrets no open PR owns; with --delete, remove them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--delete", action="store_true", help="delete the removable ones")

    def handle(self, *args: Any, **options: Any) -> None:
        leftovers = cleanup.clean_leftovers() if options["delete"] else None
        found = cleanup.sweep()
        for orphan in found:
            flag = "" if orphan.removable else " (kept: in use)"
            self.stdout.write(
                f"{orphan.kind:16} {orphan.namespace}/{orphan.name}: {orphan.reason}{flag}"
            )
        if not options["delete"]:
            self.stdout.write(
                f"{len(found)} orphan(s); dry run, nothing deleted (--delete to clean up)"
            )
            return
        for orphan in found:
            self.stdout.write(cleanup.remove(orphan))
        self.stdout.write(
            f"leftover namespaces deleted: {leftovers['deleted'] if leftovers else 0}"
        )
