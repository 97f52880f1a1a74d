"""Admin for tasks: read-only detail, filters, cancel and retry, a link to the Celery result."""

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django_celery_results.models import TaskResult

from apps.tasks.models import Task, TaskAttempt
from apps.tasks.registry import task_types
from apps.tasks.services import task_cancel, task_retry
from contextos.admin import OwnerFilter, RecordAdmin, as_uuid, json_display, owned_by_username


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
        return (attempt.error or {}).get("message", "—")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(RecordAdmin):
    list_display = (
        "id",
        "type",
        "owner",
        "status",
        "percent",
        "attempt",
        "created_at",
        "started_at",
        "finished_at",
    )
    list_filter = (
        "status",
        TaskTypeFilter,
        OwnerFilter,
        "created_at",
    )
    search_fields = ("=id", "=type", "=owner__username", "=idempotency_key", "=celery_task_id")
    search_help_text = "A task or Celery task id, a type, an owner's username, an idempotency key."
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    actions = ("cancel_tasks", "retry_tasks")
    inlines = (TaskAttemptInline,)
    fieldsets = (
        (None, {"fields": ("id", "type", "owner", "status", "attempt", "celery_result")}),
        ("Input and outcome", {"fields": ("params_json", "progress_json", "result_json")}),
        ("Error", {"fields": ("error_json", "error_traceback")}),
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

    @admin.display(description="progress")
    def percent(self, task: Task) -> str:
        return f"{task.progress['percent']:g}%" if task.progress else "—"

    params_json = json_display("params")
    progress_json = json_display("progress")
    result_json = json_display("result")
    error_json = json_display("error")

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

    @admin.action(description="Cancel selected tasks")
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self.apply_service(
            request, queryset, lambda task: task_cancel(task=task), "Cancelled {count} task(s)."
        )

    @admin.action(description="Retry selected failed or cancelled tasks")
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self.apply_service(
            request, queryset, lambda task: task_retry(task=task), "Queued {count} task(s) again."
        )
