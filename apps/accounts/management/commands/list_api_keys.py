"""``manage.py list_api_keys [--user U]``: the keys, never their values."""

from django.core.management.base import BaseCommand, CommandParser

from apps.accounts.selectors import api_key_list


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


class Command(BaseCommand):
    help = "List API keys (prefix, owner, name, state, created, expires, last used); newest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", dest="username", help="Only this user's keys.")

    def handle(self, *args, username: str | None, **options) -> None:
        columns = ("PREFIX", "USER", "NAME", "STATE", "CREATED", "EXPIRES", "LAST USED")
        rows = [
            (
                key.prefix,
                key.user.username,
                key.name or "-",
                "revoked" if key.is_revoked else "expired" if key.is_expired else "active",
                _when(key.created_at),
                _when(key.expires_at),
                _when(key.last_used_at),
            )
            for key in api_key_list(username=username)
        ]
        widths = [max(len(str(v)) for v in column) for column in zip(columns, *rows, strict=False)]
        for row in (columns, *rows):
            self.stdout.write(
                "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            )
