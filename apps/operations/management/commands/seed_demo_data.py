"""``manage.py seed_demo_data --interactions N --tasks M``: bulk demo data (admin, benchmarks)."""

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.operations.demo_data import demo_users, seed_interactions, seed_tasks


class Command(BaseCommand):
    help = (
        "Insert N realistic demo AI interactions and M tasks, spread over demo users "
        "(demo-001, ...), the configured models, task types, statuses and the last 90 days, "
        "then roll up the interactions' usage. Bulk: a million rows of each take about a "
        "minute on PostgreSQL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interactions", type=int, default=0, help="How many interactions.")
        parser.add_argument("--tasks", type=int, default=0, help="How many tasks.")
        parser.add_argument("--users", type=int, default=10, help="Spread over this many users.")

    def handle(self, *args, interactions: int, tasks: int, users: int, **options) -> None:
        if interactions < 0 or tasks < 0 or interactions + tasks < 1 or users < 1:
            raise CommandError(
                "Give --interactions and/or --tasks (at least one row), and --users of at least 1."
            )
        owners = demo_users(count=users)
        for what, count, seed in (
            ("interactions", interactions, seed_interactions),
            ("tasks", tasks, seed_tasks),
        ):
            if count:
                started = time.monotonic()
                inserted = seed(count=count, owners=owners)
                self.stdout.write(
                    f"Inserted {inserted} {what} for {users} users "
                    f"in {time.monotonic() - started:.1f} s."
                )
