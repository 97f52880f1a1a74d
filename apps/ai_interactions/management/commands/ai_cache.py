"""``manage.py ai_cache stats|clear [--model M]``: the Redis cache of AI answers."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.ai_interactions.answer_cache import response_cache_clear, response_cache_stats
from contextos.exceptions import AppError


class Command(BaseCommand):
    help = (
        "stats: how many AI answers are cached (ai:response:*) and the memory they use; "
        "clear: delete them. Both walk the keys with SCAN (never KEYS or FLUSHDB); "
        "--model limits them to one model's answers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["stats", "clear"])
        parser.add_argument("--model", help="Only the answers of this model.")

    def handle(self, *args, action: str, model: str | None, **options) -> None:
        scope = f"model {model}" if model else "all models"
        try:
            if action == "stats":
                stats = response_cache_stats(model=model)
                self.stdout.write(
                    f"{stats['keys']} cached answers ({scope}), {stats['bytes']:,} bytes in Redis."
                )
            else:
                self.stdout.write(
                    f"Removed {response_cache_clear(model=model)} cached answers ({scope})."
                )
        except AppError as error:
            raise CommandError(error.message) from error
