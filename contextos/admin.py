"""Helpers shared by the admin classes of every app."""

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Exists, Max, Min, OuterRef, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from contextos.exceptions import AppError


def pretty_json(value: Any) -> str:
    """A JSON value, indented, in a ``<pre>`` block for read-only admin pages."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="preformatted">{}</pre>', text)


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

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        aggregates = getattr(self.model_admin, "list_totals", None)
        self.totals = None
        if aggregates is not None:
            sums = list_totals(self.queryset, aggregates, self.result_count)
            self.totals = self.model_admin.totals_shown(sums, self.result_count)

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


# --- Display helpers: the same look for a value on every list and detail page ---------


def status_badge(value: str, label: str | None = None) -> str:
    """A status as a coloured badge (``static/contextos/admin.css`` colours each value)."""
    return format_html(
        '<span class="record-status status-{}" data-status="{}">{}</span>',
        value,
        value,
        label or value,
    )


CENT = Decimal("0.01")


def money(amount: Decimal | float | None) -> str:
    """Dollars for people: ``$12.35``, ``$1,234.50``, ``$0.00``; under a cent two
    significant digits (``$0.0042``); never the eight decimals the columns keep."""
    if amount is None:
        return "—"
    amount = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)
    if amount == 0:
        return "$0.00"
    if abs(amount) >= CENT:
        return f"${amount.quantize(CENT, ROUND_HALF_UP):,}"
    places = min(8, 1 - amount.copy_abs().adjusted())
    return f"${amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):f}"


def duration(milliseconds: float | None) -> str:
    """``850 ms``, ``3.2 s``, ``4 min 05 s``, ``2 h 10 min``, ``15 d 4 h``."""
    if milliseconds is None:
        return "—"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def short_id(value: Any) -> str:
    """The first 8 characters of an id, the whole one in a tooltip."""
    text = str(value)
    return format_html('<code class="short-id" title="{}">{}</code>', text, text[:8])


def preview(text: str | None, length: int = 60) -> str:
    """One line of ``text``, cut at ``length`` characters, the whole text in a tooltip."""
    if not text:
        return "—"
    line = " ".join(text.split())
    shown = line if len(line) <= length else line[: length - 1] + "…"
    return format_html('<span class="preview" title="{}">{}</span>', text[:2000], shown)


def moment(value: datetime | None) -> str:
    """A time in a list: month, day and time of day; the full ISO time in a tooltip."""
    if value is None:
        return "—"
    return format_html(
        '<span class="nowrap" title="{}">{}</span>',
        value.isoformat(),
        timezone.localtime(value).strftime("%m-%d %H:%M"),
    )


def preformatted(text: str | None) -> str:
    """Text whose line breaks and indentation matter (a traceback, an answer)."""
    if not text:
        return "—"
    return format_html('<pre class="preformatted">{}</pre>', text)


class SelectedIdFilter(admin.SimpleListFilter):
    """Rows of one related object (``?<parameter>=<id>``), the target of links from other
    pages (a task's interactions, a key's calls). Shown only while it is applied."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(self.value(), str(self.value())[:8])] if self.value() else []

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        try:
            return queryset.filter(**{self.field: self.value()})
        except (ValueError, ValidationError):
            return queryset.none()


def id_filter(parameter: str, field: str, title: str) -> type[SelectedIdFilter]:
    """A ``SelectedIdFilter`` on ``field`` answering ``?parameter=``."""
    return type(
        f"{parameter.title().replace('_', '')}Filter",
        (SelectedIdFilter,),
        {"parameter_name": parameter, "field": field, "title": title},
    )


# --- Detail pages: read-only, with the actions the record allows ---------------------


@dataclass(frozen=True)
class RecordAction:
    """A button on a detail page: ``run(obj, actor)`` calls the service; ``done`` is the
    message after it (``{obj}`` is the record)."""

    name: str
    label: str
    run: Callable[[Any, Any], object]
    done: str
    danger: bool = False


class RecordPageMixin:
    """Detail pages without a Save button, showing the record's status (refreshed every
    second while it is queued or running, by ``static/contextos/admin.js``), its progress
    and buttons for the actions it allows, which post to ``<id>/act/``."""

    change_form_template = "admin/record_change_form.html"
    LIVE_STATUSES = ("queued", "running")

    def record_actions(self, request: HttpRequest, obj: Any) -> list[RecordAction]:
        """The actions ``obj`` allows now."""
        return []

    def record_status(self, obj: Any) -> str:
        return getattr(obj, "status", "")

    def record_progress(self, obj: Any) -> dict[str, Any] | None:
        """``{"percent": ..., "message": ...}`` for a progress bar, or None."""
        return None

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _url_name(self, view: str) -> str:
        return f"{self.model._meta.app_label}_{self.model._meta.model_name}_{view}"

    def get_urls(self) -> list:
        act = path(
            "<path:object_id>/act/",
            self.admin_site.admin_view(self.act_view),
            name=self._url_name("act"),
        )
        return [act, *super().get_urls()]

    def render_change_form(self, request: HttpRequest, context: dict, *args: Any, **kwargs: Any):
        obj = context.get("original")
        if obj is not None:
            status = self.record_status(obj)
            context["record"] = {
                "status": status,
                "live": status in self.LIVE_STATUSES,
                "progress": self.record_progress(obj),
                "actions": self.record_actions(request, obj),
                "act_url": reverse(f"admin:{self._url_name('act')}", args=[obj.pk]),
            }
        return super().render_change_form(request, context, *args, **kwargs)

    @method_decorator(require_POST)
    def act_view(self, request: HttpRequest, object_id: str):
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_permission(request, obj):
            raise Http404
        wanted = request.POST.get("record_action", "")
        action = next((a for a in self.record_actions(request, obj) if a.name == wanted), None)
        if action is None:
            self.message_user(
                request, f"“{wanted}” is not possible for this record now.", messages.WARNING
            )
        else:
            try:
                action.run(obj, request.user)
            except AppError as error:
                self.message_user(request, error.message, messages.WARNING)
            else:
                self.message_user(request, action.done.format(obj=obj), messages.SUCCESS)
        return HttpResponseRedirect(reverse(f"admin:{self._url_name('change')}", args=[obj.pk]))


# --- Lists: totals of the filtered set -------------------------------------------------


def list_totals(queryset: QuerySet, aggregates: dict[str, Any], count: int) -> dict | None:
    """The filtered set's ``aggregates`` when it is small enough to sum on each page view
    (``EstimatedCountPaginator.EXACT_BELOW`` rows), else None: a larger set is summed by
    the usage report and the dashboard, from the hourly rollups."""
    if count >= EstimatedCountPaginator.EXACT_BELOW:
        return None
    return queryset.order_by().aggregate(**aggregates) if aggregates else {}


class RecordAdmin(RecordPageMixin, admin.ModelAdmin):
    """A read-only view of rows the application writes (tasks, interactions).

    Every field in ``fieldsets`` is read-only, nothing is added by hand, large
    tables are paginated without a full count, a search is one indexed lookup
    (``search_filter``), the list sums ``list_totals`` over the filtered set, and
    actions (on the list and as buttons on the detail page) go through services.
    """

    change_list_template = "admin/record_change_list.html"
    # Aggregates summed over the filtered set under the list (None: no totals).
    list_totals: dict[str, Any] | None = None

    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def totals_shown(self, sums: dict[str, Any] | None, count: int) -> list[tuple[str, str]]:
        """The totals line under the list: ``(label, value)`` pairs. ``sums`` is None for a
        set too large to sum on each view."""
        if sums is None:
            return [("rows", f"about {count:,}"), ("totals", "narrow the filters to sum them")]
        return [("rows", f"{count:,}")]

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
        """Run ``service`` on each selected row; report how many it took (``done_message``,
        unless empty) and why others not."""
        done = 0
        for obj in queryset:
            try:
                service(obj)
                done += 1
            except AppError as error:
                self.message_user(request, f"{obj.pk}: {error.message}", messages.WARNING)
        if done and done_message:
            self.message_user(request, done_message.format(count=done), messages.SUCCESS)
