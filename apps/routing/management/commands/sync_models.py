"""``manage.py sync_models FILE.yaml [--dry-run] [--prune]``: the routing tables as a file."""

from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.routing.services import ModelsFileInvalid, models_sync


def read_document(path: str) -> object:
    """The parsed YAML file. A syntax error names its place, never the line's text (it
    could hold a key)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"{path}: cannot be read ({error.__class__.__name__}).") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or "not valid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise CommandError(f"{path}: {where}{problem}.") from None


class Command(BaseCommand):
    help = (
        "Make providers, routes and deployments match a YAML file (see "
        "docs/models.example.yaml): prints each row created, changed or removed, or "
        "'No changes.'. API keys are os.environ/NAME references, read now and stored "
        "encrypted. Rows the file lacks are kept unless --prune."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The models file (YAML).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would change, write nothing."
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Remove the providers, routes and deployments the file lacks "
            "(the built-in echo models included).",
        )

    def handle(self, *args: object, **options: object) -> None:
        document = read_document(str(options["file"]))
        try:
            lines = models_sync(
                document, dry_run=bool(options["dry_run"]), prune=bool(options["prune"])
            )
        except ModelsFileInvalid as error:
            problems = "\n".join(f"  {message}" for message in error.errors)
            raise CommandError(
                f"{options['file']} was not synced (nothing written):\n{problems}"
            ) from None
        for line in lines:
            self.stdout.write(line)
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was written.")
