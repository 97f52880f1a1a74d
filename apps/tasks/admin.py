"""Admin for tasks: a list that fits, read-only detail with Retry and Cancel, progress,
the task's interactions and its Celery result."""

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_celery_results.models import TaskResult

from apps.ai_interactions.models import AIInteraction
from apps.tasks.models import FINISHED_STATUSES, RETRYABLE_STATUSES, Task, TaskAttempt
from apps.tasks.registry import task_types
from apps.tasks.services import task_cancel, task_retry
from contextos.admin import (
    OwnerFilter,
    RecordAction,
    RecordAdmin,
    as_uuid,
    duration,
    json_display,
    moment,
    owned_by_username,
    preformatted,
    preview,
    short_id,
    status_badge,
)

LINKED_INTERACTIONS_SHOWN = 20


def task_outcome(task: Task) -> str:
    """One line on how the task ended: its error, or how many of a batch's items failed."""
    if task.error:
        return task.error.get("message", "")
    result = task.result if isinstance(task.result, dict) else {}
    return result.get("summary", "") if result.get("failed") else ""


class TaskTypeFilter(admin.SimpleListFilter):
    """Filter by registered type (from the registry, not a DISTINCT over the table)."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [(task_type.name, task_type.name) for task_type in task_types()]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


class TaskAttemptInline(admin.TabularInline):
    model = TaskAttempt
    extra = 0
    can_delete = False
    fields = ("number", "status", "error_summary", "started_at", "finished_at", "celery_task_id")
    readonly_fields = fields

    @admin.display(description="error")
    def error_summary(self, attempt: TaskAttempt) -> str:
        return preview((attempt.error or {}).get("message"), 120)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(RecordAdmin):
    list_display = (
        "short_task_id",
        "type",
        "owner",
        "status_shown",
        "progress_shown",
        "attempt",
        "created",
        "took",
        "outcome",
    )
    sortable_by = ("created",)
    list_display_links = ("short_task_id",)
    list_filter = (
        "status",
        TaskTypeFilter,
        OwnerFilter,
        "created_at",
    )
    list_totals: dict[str, Any] = {}
    search_fields = ("=id", "=type", "=owner__username", "=idempotency_key", "=celery_task_id")
    search_help_text = "A task or Celery task id, a type, an owner's username, an idempotency key."
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    actions = ("cancel_tasks", "retry_tasks")
    inlines = (TaskAttemptInline,)
    fieldsets = (
        (None, {"fields": ("id", "type", "owner", "attempt", "outcome", "celery_result")}),
        ("Input and outcome", {"fields": ("params_json", "result_json", "interactions")}),
        ("Error", {"fields": ("error_json", "traceback")}),
        (
            "Timing and delivery",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "finished_at",
                    "heartbeat_at",
                    "cancel_requested_at",
                    "worker",
                    "celery_task_id",
                    "idempotency_key",
                    "dispatch_pending",
                )
            },
        ),
    )

    def search_filter(self, term: str) -> Q:
        if (task_id := as_uuid(term)) is not None:
            return Q(pk=task_id) | Q(celery_task_id=term)
        return Q(type=term) | Q(idempotency_key=term) | Q(owner__in=owned_by_username(term))

    # --- The list

    @admin.display(description="id", ordering="created_at")
    def short_task_id(self, task: Task) -> str:
        return short_id(task.pk)

    @admin.display(description="status")
    def status_shown(self, task: Task) -> str:
        result = task.result if isinstance(task.result, dict) else {}
        if task.status == "succeeded" and result.get("failed"):
            return status_badge("partial", f"{result['failed']} failed")
        return status_badge(task.status)

    @admin.display(description="progress")
    def progress_shown(self, task: Task) -> str:
        if not task.progress:
            return "—"
        percent = task.progress.get("percent", 0)
        if task.status in FINISHED_STATUSES:
            return f"{percent:g}%"
        return format_html(
            '<progress class="list-progress" max="100" value="{}"></progress> {}%',
            percent,
            f"{percent:g}",
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, task: Task) -> str:
        return moment(task.created_at)

    @admin.display(description="took")
    def took(self, task: Task) -> str:
        if task.started_at is None:
            return "—"
        end = task.finished_at or timezone.now()
        shown = duration((end - task.started_at).total_seconds() * 1000)
        return shown if task.finished_at else f"{shown} so far"

    @admin.display(description="outcome")
    def outcome(self, task: Task) -> str:
        return preview(task_outcome(task), 48)

    # --- The detail page

    def record_actions(self, request: HttpRequest, task: Task) -> list[RecordAction]:
        if task.status in RETRYABLE_STATUSES:
            return [
                RecordAction(
                    "retry",
                    "Retry",
                    lambda task, actor: task_retry(task=task, actor=actor),
                    "Task {obj.pk} queued again.",
                )
            ]
        if task.status not in FINISHED_STATUSES and task.cancel_requested_at is None:
            return [
                RecordAction(
                    "cancel",
                    "Cancel",
                    lambda task, actor: task_cancel(task=task, actor=actor),
                    "Cancellation of task {obj.pk} requested.",
                    danger=True,
                )
            ]
        return []

    def record_progress(self, task: Task) -> dict[str, Any] | None:
        if task.progress is None:
            return None
        return {
            "percent": task.progress.get("percent", 0),
            "message": task.progress.get("message", ""),
        }

    params_json = json_display("params")
    result_json = json_display("result")
    error_json = json_display("error")

    @admin.display(description="traceback")
    def traceback(self, task: Task) -> str:
        return preformatted(task.error_traceback)

    @admin.display(description="interactions")
    def interactions(self, task: Task) -> str:
        linked = list(
            AIInteraction.objects.filter(task=task)
            .order_by("created_at")
            .values("pk", "status", "model", "created_at")[: LINKED_INTERACTIONS_SHOWN + 1]
        )
        if not linked:
            return "—"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:ai_interactions_aiinteraction_change", args=[row["pk"]]),
                    str(row["pk"])[:8],
                    status_badge(row["status"]),
                    row["model"],
                )
                for row in linked[:LINKED_INTERACTIONS_SHOWN]
            ),
        )
        every = reverse("admin:ai_interactions_aiinteraction_changelist")
        return format_html(
            '<table class="linked-records">{}</table><p><a href="{}?{}">All of this task\'s '
            "interactions</a></p>",
            rows,
            every,
            urlencode({"task": task.pk}),
        )

    @admin.display(description="Celery result")
    def celery_result(self, task: Task) -> str:
        result_pk = (
            TaskResult.objects.filter(task_id=task.celery_task_id)
            .values_list("pk", flat=True)
            .first()
        )
        if result_pk is None:
            return "— (none recorded yet)"
        url = reverse("admin:django_celery_results_taskresult_change", args=[result_pk])
        return format_html('<a href="{}">{}</a>', url, task.celery_task_id)

    # --- Actions on the selected rows of the list

    @admin.action(description="Cancel selected tasks")
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        stopped, stopping = [], []

        def cancel(task: Task) -> None:
            task = task_cancel(task=task, actor=request.user)
            (stopped if task.status == "cancelled" else stopping).append(task)

        self.apply_service(request, queryset, cancel, "")
        if stopped:
            self.message_user(request, f"Cancelled {len(stopped)} queued task(s).")
        if stopping:
            self.message_user(
                request,
                f"Asked {len(stopping)} running task(s) to stop: each shows cancelled once its "
                "worker stops it (at its next checkpoint, or when it is terminated).",
            )

    @admin.action(description="Retry selected failed or cancelled tasks")
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self.apply_service(
            request,
            queryset,
            lambda task: task_retry(task=task, actor=request.user),
            "Queued {count} task(s) again.",
        )
