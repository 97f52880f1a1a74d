"""``manage.py revoke_api_key <prefix>``: stop an API key from working."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.selectors import api_key_list
from apps.accounts.services import api_key_revoke
from contextos.exceptions import Conflict


class Command(BaseCommand):
    help = (
        "Revoke the API key whose prefix (as shown by list_api_keys, e.g. ctx_AbCd1234) "
        "is given. Revoking a revoked key changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's prefix, as list_api_keys shows it.")

    def handle(self, *args, prefix: str, **options) -> None:
        matches = list(api_key_list(prefix=prefix)[:2])
        if not matches:
            raise CommandError(f"No API key with prefix {prefix!r}.")
        if len(matches) > 1:
            raise CommandError(f"Prefix {prefix!r} matches more than one key; give more of it.")
        api_key = matches[0]
        try:
            api_key_revoke(api_key=api_key)
        except Conflict as error:
            if error.code != "already_revoked":
                raise CommandError(error.message) from None
            when = f"{api_key.revoked_at:%Y-%m-%d %H:%M:%S}"
            self.stdout.write(
                f"{api_key.prefix} ({api_key.user.username}) was already revoked at {when} UTC; "
                "nothing changed."
            )
            return
        when = f"{api_key.revoked_at:%Y-%m-%d %H:%M:%S}"
        self.stdout.write(f"Revoked {api_key.prefix} ({api_key.user.username}) at {when} UTC.")
