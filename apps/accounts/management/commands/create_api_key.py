"""``manage.py create_api_key <username>``: print a new API key, once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.services import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key for an existing user and print it alone on one line. "
        "Only its hash is stored: the key cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The user the key authenticates as.")
        parser.add_argument("--name", default="", help="A label to recognise the key by.")
        parser.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help="Days until the key stops working (default: never).",
        )

    def handle(self, *args, username: str, name: str, expires_in_days: int | None, **options):
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        _, raw_key = api_key_create(user=user, name=name, expires_in_days=expires_in_days)
        self.stdout.write(raw_key)
