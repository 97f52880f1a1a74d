"""``manage.py setup_periodic_tasks [--reset]``: create or update the default periodic tasks."""

from django.core.management.base import BaseCommand, CommandParser

from apps.operations.services import periodic_tasks_setup
from contextos.tables import format_table


class Command(BaseCommand):
    help = (
        "Upsert ContextOS's periodic tasks (django-celery-beat) by name. Existing ones keep "
        "their enabled flag, schedule and last run; --reset restores the declared values. "
        "Safe to run any number of times (scripts/start-beat runs it)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Restore the declared schedule, expiry and enabled flag of every one.",
        )

    def handle(self, *args, reset: bool, **options) -> None:
        changes = periodic_tasks_setup(reset=reset)
        if options["verbosity"] == 0:
            return
        rows = [
            (
                change.name,
                change.action,
                change.schedule,
                "yes" if change.enabled else "no",
            )
            for change in changes
        ]
        self.stdout.write(format_table(("PERIODIC TASK", "ACTION", "SCHEDULE", "ENABLED"), rows))
