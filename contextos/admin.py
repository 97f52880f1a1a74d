"""Helpers shared by the admin classes of every app."""

import json
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html

from contextos.exceptions import AppError


def pretty_json(value: Any) -> str:
    """A JSON value, indented, in a ``<pre>`` block for read-only admin pages."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def json_display(field: str, description: str | None = None) -> Callable[[Any, Any], str]:
    """A read-only admin field showing the JSON field ``field`` pretty-printed."""

    @admin.display(description=description or field)
    def display(model_admin: Any, obj: Any) -> str:
        return pretty_json(getattr(obj, field))

    return display


class EstimatedCountPaginator(Paginator):
    """The admin's paginator without a full ``COUNT(*)`` of a large table.

    An unfiltered changelist on PostgreSQL takes the planner's row estimate
    (kept fresh by autovacuum) once the table is large; filtered lists and
    small tables are counted exactly.
    """

    EXACT_BELOW = 100_000

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [self.object_list.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] >= self.EXACT_BELOW:
                return row[0]
        return super().count


def as_uuid(term: str) -> uuid.UUID | None:
    """``term`` as a UUID, or None: admin searches route ids to the primary key index."""
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def owned_by_username(username: str) -> QuerySet:
    """A subquery of user ids, so a search by owner uses the owner index, not a join scan."""
    return get_user_model().objects.filter(username=username).values("pk")


class RecordAdmin(admin.ModelAdmin):
    """A read-only view of rows the application writes (tasks, interactions).

    Every field in ``fieldsets`` is read-only, nothing is added by hand, large
    tables are paginated without a full count, and actions go through services.
    """

    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field for fieldset in self.fieldsets or () for field in fieldset[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def apply_service(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        service: Callable[[Any], object],
        done_message: str,
    ) -> None:
        """Run ``service`` on each selected row; report how many it took and why others not."""
        done = 0
        for obj in queryset:
            try:
                service(obj)
                done += 1
            except AppError as error:
                self.message_user(request, f"{obj.pk}: {error.message}", messages.WARNING)
        if done:
            self.message_user(request, done_message.format(count=done), messages.SUCCESS)
