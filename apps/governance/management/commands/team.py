"""``manage.py team create|add|remove|list``: teams and their members."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.models import Team, TeamRole
from apps.governance.selectors import team_get_by_name, team_list
from apps.governance.services import team_create, team_member_add, team_member_remove
from contextos.exceptions import AppError


class Command(BaseCommand):
    help = "Create teams, add or remove their members, list them with their members."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create a team.")
        create.add_argument("name")
        add = actions.add_parser("add", help="Add a user to a team (or change their role).")
        add.add_argument("name", help="The team.")
        add.add_argument("username")
        add.add_argument("--role", choices=TeamRole.values, default=TeamRole.MEMBER)
        remove = actions.add_parser(
            "remove", help="Take a user out of a team (their keys in it leave it too)."
        )
        remove.add_argument("name", help="The team.")
        remove.add_argument("username")
        actions.add_parser("list", help="Every team with its members and their roles.")

    def handle(self, *args, action: str, **options) -> None:
        try:
            if action == "create":
                team = team_create(name=options["name"])
                self.stdout.write(f"Created team {team.name} ({team.pk}).")
            elif action == "add":
                team, user = self._team(options["name"]), self._user(options["username"])
                team_member_add(team=team, user=user, role=options["role"])
                self.stdout.write(f"{user.username} is a {options['role']} of {team.name}.")
            elif action == "remove":
                team, user = self._team(options["name"]), self._user(options["username"])
                if not team_member_remove(team=team, user=user):
                    raise CommandError(f"{user.username} is not a member of {team.name}.")
                self.stdout.write(f"Removed {user.username} from {team.name}.")
            else:
                self._list()
        except AppError as error:
            raise CommandError(error.message) from None

    def _list(self) -> None:
        teams = list(team_list())
        if not teams:
            self.stdout.write("No teams.")
        for team in teams:
            members = ", ".join(f"{m.user.username} ({m.role})" for m in team.memberships.all())
            self.stdout.write(f"{team.name}  {team.pk}  {members or '(no members)'}")

    @staticmethod
    def _team(name: str) -> Team:
        team = team_get_by_name(name)
        if team is None:
            raise CommandError(f"No team named {name!r}.")
        return team

    @staticmethod
    def _user(username: str):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        return user
