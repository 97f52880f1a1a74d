"""``manage.py seed_demo_data --interactions N``: bulk demo data for the admin and benchmarks."""

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.ai_interactions.demo_data import demo_users, seed_interactions


class Command(BaseCommand):
    help = (
        "Insert N realistic demo AI interactions, spread over demo users (demo-001, ...), "
        "the configured models, statuses and the last 90 days. Bulk: a million rows take "
        "well under two minutes on PostgreSQL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interactions", type=int, required=True, help="How many rows.")
        parser.add_argument("--users", type=int, default=10, help="Spread over this many users.")

    def handle(self, *args, interactions: int, users: int, **options) -> None:
        if interactions < 1 or users < 1:
            raise CommandError("--interactions and --users must be at least 1.")
        started = time.monotonic()
        inserted = seed_interactions(count=interactions, owners=demo_users(count=users))
        self.stdout.write(
            f"Inserted {inserted} interactions for {users} users "
            f"in {time.monotonic() - started:.1f} s."
        )
