"""Helpers shared by the admin classes of every app."""

import json
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Exists, Max, Min, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
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
    """The admin's paginator without a full ``COUNT(*)`` of a large result.

    On PostgreSQL a list the planner expects to be large (the whole table:
    its row estimate, kept fresh by autovacuum; a filtered list: the plan's
    estimate) takes that estimate; lists expected to be small are counted
    exactly.
    """

    EXACT_BELOW = 100_000

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and connection.vendor == "postgresql":
            estimate = self._filtered_estimate() if query.where else self._table_estimate()
            if estimate >= self.EXACT_BELOW:
                return estimate
        return super().count

    def _table_estimate(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.object_list.model._meta.db_table],
            )
            row = cursor.fetchone()
        return row[0] if row else 0

    def _filtered_estimate(self) -> int:
        plan = self.object_list.order_by().values("pk").explain(format="json")
        if not plan:  # a filter Django knows matches nothing (e.g. ``__in=[]``) has no plan
            return 0
        return int(json.loads(plan)[0]["Plan"]["Plan Rows"])


class PeriodsBetweenBoundsQuerySet(QuerySet):
    """A queryset whose ``dates``/``datetimes`` are every period from its first row to its last.

    The admin's date hierarchy asks for the distinct days (months, years) of
    the listed rows, a DISTINCT over the whole filtered table; the periods
    between the first and the last row (two index lookups) serve as well,
    empty ones included.
    """

    def dates(self, field_name: str, kind: str, order: str = "ASC") -> list[date]:
        return [moment.date() for moment in self._periods(field_name, kind, None, order)]

    def datetimes(
        self, field_name: str, kind: str, order: str = "ASC", tzinfo: tzinfo | None = None
    ) -> list[datetime]:
        return self._periods(field_name, kind, tzinfo or timezone.get_current_timezone(), order)

    def _periods(self, field_name: str, kind: str, zone: tzinfo | None, order: str) -> list:
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        first, last = (
            timezone.localtime(bounds[end], zone)
            if zone and isinstance(bounds[end], datetime)
            else _as_datetime(bounds[end])
            for end in ("first", "last")
        )
        periods, current = [], _period_start(first, kind)
        while current <= last:
            periods.append(current)
            current = _next_period(current, kind)
        return periods if order == "ASC" else periods[::-1]


def _as_datetime(value: date) -> datetime:
    return value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)


def _period_start(moment: datetime, kind: str) -> datetime:
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind in ("month", "year"):
        start = start.replace(day=1)
    if kind == "year":
        start = start.replace(month=1)
    return start


def _next_period(start: datetime, kind: str) -> datetime:
    if kind == "year":
        return start.replace(year=start.year + 1)
    if kind == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + timedelta(days=1)


class LargeTableChangeList(ChangeList):
    """A changelist whose date hierarchy needs no DISTINCT over the table and which sorts
    only by the columns an index can order."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        if type(queryset) is QuerySet:
            queryset.__class__ = PeriodsBetweenBoundsQuerySet
        return queryset

    def get_ordering(self, request: HttpRequest, queryset: QuerySet) -> list:
        # ``sortable_by`` only hides the links: an ``?o=`` typed by hand naming other
        # columns is dropped too, and with nothing left the default order applies.
        if ORDER_VAR in self.params:
            kept = [part for part in self.params[ORDER_VAR].split(".") if self._sortable(part)]
            if kept:
                self.params[ORDER_VAR] = ".".join(kept)
            else:
                del self.params[ORDER_VAR]
        return super().get_ordering(request, queryset)

    def _sortable(self, part: str) -> bool:
        index = part.rpartition("-")[2]
        if not index.isdigit() or int(index) >= len(self.list_display):
            return False
        return self.sortable_by is None or self.list_display[int(index)] in self.sortable_by


class OwnerFilter(admin.SimpleListFilter):
    """Filter by owner, listing users who own at least one row (an index probe per user,
    not a DISTINCT over the table)."""

    title = "owner"
    parameter_name = "owner__id__exact"
    LIMIT = 200

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        owns = model_admin.model.objects.filter(owner=OuterRef("pk"))
        owners = get_user_model().objects.filter(Exists(owns)).order_by("username")
        return [(user.pk, user.get_username()) for user in owners[: self.LIMIT]]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(owner_id=self.value()) if self.value() else queryset


def as_uuid(term: str) -> uuid.UUID | None:
    """``term`` as a UUID, or None: admin searches route ids to the primary key index."""
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def owned_by_username(username: str) -> list[Any]:
    """The ids of the users called ``username``: a search by owner then uses the owner
    index (and no user means no query), instead of a join or subquery scan."""
    return list(get_user_model().objects.filter(username=username).values_list("pk", flat=True))


class RecordAdmin(admin.ModelAdmin):
    """A read-only view of rows the application writes (tasks, interactions).

    Every field in ``fieldsets`` is read-only, nothing is added by hand, large
    tables are paginated without a full count, a search is one indexed lookup
    (``search_filter``), and actions go through services.
    """

    show_full_result_count = False
    paginator = EstimatedCountPaginator
    # Sorting by other columns would sort millions of rows; filters cover them.
    sortable_by = ("created_at",)
    # Facet counts are a COUNT per filter choice over the whole table (minutes at 1M rows).
    show_facets = admin.ShowFacets.NEVER

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LargeTableChangeList

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field for fieldset in self.fieldsets or () for field in fieldset[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        # Indexed lookups chosen by the term's shape, instead of Django's OR of
        # every search field over a join.
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = self.search_filter(term)
        if condition is None:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(condition), False

    def search_filter(self, term: str) -> Q | None:
        """The rows a search for ``term`` (stripped, not empty) finds, or None to leave
        the search to Django's ``search_fields``. ``as_uuid`` and ``owned_by_username``
        help keep each lookup on an index."""
        return None

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
