"""Admin for Celery's own records: task results (read-only, each linked to its ContextOS
task) and periodic tasks (a list that fits, with when each last ran)."""

import json
from typing import Any

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from apps.tasks.models import Task
from contextos.admin import RecordPageMixin, preformatted, pretty_json, short_id, status_badge

admin.site.unregister(TaskResult)


def _decoded(text: str | None) -> Any:
    """Celery stores results and meta as JSON text."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


admin.site.unregister(PeriodicTask)


@admin.register(TaskResult)
class TaskResultAdmin(RecordPageMixin, admin.ModelAdmin):
    list_display = ("short_result_id", "task_name", "status_shown", "date_done", "worker", "task")
    list_display_links = ("short_result_id",)
    # Filters by name or worker would be a DISTINCT over the whole table: search instead.
    list_filter = ("status", "date_done")
    search_fields = ("=task_id", "=task_name", "=worker")
    search_help_text = "A Celery task id, a task name (e.g. ai.batch) or a worker."
    date_hierarchy = "date_done"
    show_facets = admin.ShowFacets.NEVER
    fieldsets = (
        (None, {"fields": ("task_id", "task", "task_name", "periodic_task_name", "worker")}),
        ("Result", {"fields": ("result_json", "traceback_shown", "meta_json")}),
        ("Timing", {"fields": ("date_created", "date_started", "date_done")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskResult]:
        contextos_task = Task.objects.filter(celery_task_id=OuterRef("task_id")).values("pk")[:1]
        return super().get_queryset(request).annotate(contextos_task_id=Subquery(contextos_task))

    @admin.display(description="task id", ordering="date_done")
    def short_result_id(self, result: TaskResult) -> str:
        return short_id(result.task_id)

    @admin.display(description="status")
    def status_shown(self, result: TaskResult) -> str:
        return status_badge(result.status)

    @admin.display(description="ContextOS task")
    def task(self, result: TaskResult) -> str:
        if result.contextos_task_id is None:
            return "—"
        url = reverse("admin:tasks_task_change", args=[result.contextos_task_id])
        return format_html('<a href="{}">{}</a>', url, short_id(result.contextos_task_id))

    @admin.display(description="traceback")
    def traceback_shown(self, result: TaskResult) -> str:
        return preformatted(result.traceback)

    @admin.display(description="result")
    def result_json(self, result: TaskResult) -> str:
        return pretty_json(_decoded(result.result))

    @admin.display(description="meta")
    def meta_json(self, result: TaskResult) -> str:
        return pretty_json(_decoded(result.meta))


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(BeatPeriodicTaskAdmin):
    # The form's crontab translation without an inline script.
    change_form_template = "admin/django_celery_beat/periodictask/change_form.html"
    list_display = ("name", "enabled", "scheduler", "last_run_at", "total_run_count", "task")
    list_filter = ("enabled", "one_off")
