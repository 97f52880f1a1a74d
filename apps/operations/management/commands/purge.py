"""``manage.py purge --older-than 30d [--what KIND] [--dry-run]``: delete old records in batches."""

import re
from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.operations.services import PURGE_KINDS, purge
from contextos.retention import PURGE_BATCH_SIZE
from contextos.tables import format_table

AGE = re.compile(r"([0-9]+)([dhm])")
AGE_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def cutoff(age: str, *, now: datetime) -> datetime:
    """The moment ``age`` (``30d``, ``12h``, ``90m``) before ``now``."""
    match = AGE.fullmatch(age.strip())
    reason = "use a positive whole number of days, hours or minutes, such as 30d, 12h or 90m"
    if match is None or int(match[1]) == 0:
        raise CommandError(f"--older-than {age!r} is not an age: {reason}.")
    try:
        return now - timedelta(**{AGE_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise CommandError(f"--older-than {age!r} reaches before the year 1.") from None


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def counted(name: str, count: int) -> str:
    return f"{count} {name[:-1] if count == 1 else name}"


class Command(BaseCommand):
    help = (
        "Delete finished tasks (with their attempts), finished AI interactions (with the "
        "cached answers no remaining interaction uses) and Celery results older than "
        "--older-than, in batches. Queued and running records are kept. --dry-run only counts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", required=True, metavar="AGE", help="An age such as 30d, 12h or 90m."
        )
        parser.add_argument(
            "--what", choices=[*PURGE_KINDS, "all"], default="all", help="Default: all."
        )
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")
        parser.add_argument(
            "--batch-size",
            type=positive,
            default=PURGE_BATCH_SIZE,
            help=f"Rows deleted per statement (default {PURGE_BATCH_SIZE}).",
        )

    def handle(
        self, *args, older_than: str, what: str, dry_run: bool, batch_size: int, **options
    ) -> None:
        before = cutoff(older_than, now=timezone.now())
        kinds = PURGE_KINDS if what == "all" else (what,)
        outcomes = purge(kinds=kinds, before=before, dry_run=dry_run, batch_size=batch_size)
        self.stdout.write(
            f"{'Dry run, nothing deleted: r' if dry_run else 'R'}ecords created before "
            f"{before:%Y-%m-%d %H:%M:%S} UTC (older than {older_than.strip()})."
        )
        rows = [
            (
                outcome.kind,
                ", ".join(counted(name, count) for name, count in outcome.removed.items()),
            )
            for outcome in outcomes
        ]
        self.stdout.write(format_table(("KIND", "WOULD REMOVE" if dry_run else "REMOVED"), rows))
