"""``manage.py check_services``: is everything ContextOS needs up? Exit 1 if not."""

from django.core.management.base import BaseCommand, CommandError

from apps.health.selectors import service_statuses
from contextos.tables import format_table


class Command(BaseCommand):
    help = (
        "Check the database, cache, broker, Celery workers online and the age of beat's "
        "last heartbeat (down after 3 minutes); print a table; exit 1 when any is down."
    )

    def handle(self, *args, **options) -> None:
        statuses = service_statuses()
        rows = [(s["service"], "up" if s["up"] else "DOWN", s["detail"]) for s in statuses]
        self.stdout.write(format_table(("SERVICE", "STATUS", "DETAIL"), rows))
        down = [s["service"] for s in statuses if not s["up"]]
        if down:
            raise CommandError(f"Down: {', '.join(down)}.")
