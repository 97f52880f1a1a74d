"""``manage.py set_limits key PREFIX|user NAME|team NAME [...]``: change the limits of a
key, a user or a team, and print them as they now stand."""

from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.selectors import api_key_list
from apps.governance.models import LIMIT_FIELDS, BudgetPeriod
from apps.governance.selectors import limits_of, team_get_by_name
from apps.governance.services import limits_as_dict, limits_set
from contextos.exceptions import AppError

# What ``--clear`` accepts: a field's name or its option's.
CLEARABLE = {
    **{field: field for field in LIMIT_FIELDS},
    "allowed-models": "allowed_models",
    "rpm": "rpm_limit",
    "tpm": "tpm_limit",
    "max-parallel": "max_parallel_requests",
    "budget-usd": "budget_usd",
    "budget": "budget_usd",
    "budget-period": "budget_period",
}


def _budget(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None


class Command(BaseCommand):
    help = (
        "Set (or --clear) limits of an API key (by prefix, as list_api_keys shows it), a user "
        "or a team, then print its limits. Every change is recorded in the audit log."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=("key", "user", "team"))
        parser.add_argument("name", help="The key's prefix, the username or the team's name.")
        parser.add_argument("--budget-usd", type=_budget, help="Dollars per budget period.")
        parser.add_argument("--budget-period", choices=BudgetPeriod.values)
        parser.add_argument("--rpm", type=int, help="Requests per minute.")
        parser.add_argument("--tpm", type=int, help="Tokens per minute.")
        parser.add_argument("--max-parallel", type=int, help="Requests in progress at once.")
        parser.add_argument(
            "--allowed-models", help="Comma-separated route names or glob patterns."
        )
        parser.add_argument(
            "--clear",
            action="append",
            default=[],
            choices=sorted(CLEARABLE),
            metavar="NAME",
            help=f"Remove a limit (repeatable): {', '.join(LIMIT_FIELDS)}.",
        )

    def handle(self, *args, kind: str, name: str, **options) -> None:
        holder = self._holder(kind, name)
        changes = {CLEARABLE[field]: None for field in options["clear"]}
        for option, field in (
            ("budget_usd", "budget_usd"),
            ("budget_period", "budget_period"),
            ("rpm", "rpm_limit"),
            ("tpm", "tpm_limit"),
            ("max_parallel", "max_parallel_requests"),
        ):
            if options[option] is not None:
                changes[field] = options[option]
        if options["allowed_models"] is not None:
            names = [m.strip() for m in options["allowed_models"].split(",") if m.strip()]
            changes["allowed_models"] = names
        if changes:
            try:
                limits_set(holder=holder, changes=changes)
            except AppError as error:
                raise CommandError(error.message) from None
        self.stdout.write(f"Limits of {kind} {name}:")
        for field, value in limits_as_dict(limits_of(holder)).items():
            if field == "allowed_models":
                value = ", ".join(value) or None
            self.stdout.write(f"  {field}: {'-' if value is None else value}")

    @staticmethod
    def _holder(kind: str, name: str):
        if kind == "key":
            matches = list(api_key_list(prefix=name)[:2])
            if not matches:
                raise CommandError(f"No API key with prefix {name!r}.")
            if len(matches) > 1:
                raise CommandError(f"Prefix {name!r} matches more than one key; give more of it.")
            return matches[0]
        if kind == "user":
            user = get_user_model().objects.filter(username=name).first()
            if user is None:
                raise CommandError(f"No user named {name!r}.")
            return user
        team = team_get_by_name(name)
        if team is None:
            raise CommandError(f"No team named {name!r}.")
        return team
