"""Admin for AI interactions: filters, search, readable detail, retry and CSV export."""

import csv
import json

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.html import format_html, format_html_join

from apps.ai_interactions.catalog import model_list
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.services import interaction_retry
from contextos.admin import RecordAdmin, as_uuid, json_display, owned_by_username

CSV_COLUMNS = (
    "id",
    "created_at",
    "owner_id",
    "status",
    "mode",
    "provider",
    "model",
    "cached",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "finish_reason",
    "provider_error_type",
)


class _CatalogFilter(admin.SimpleListFilter):
    """Choices from the model catalog, not a DISTINCT over millions of rows."""

    def lookups(self, request, model_admin):
        values = sorted({getattr(model, self.parameter_name) for model in model_list()})
        return [(value, value) for value in values]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class ModelFilter(_CatalogFilter):
    title = parameter_name = "model"


class ProviderFilter(_CatalogFilter):
    title = parameter_name = "provider"


def _shown(message: dict) -> str:
    """A message as text: its content as it is (parts, as JSON), then any tool calls."""
    content = message.get("content")
    shown = content if isinstance(content, str) else ""
    if isinstance(content, list):
        shown = json.dumps(content, indent=2)
    extras = {key: message[key] for key in ("tool_calls", "tool_call_id") if key in message}
    return "\n".join(filter(None, [shown, json.dumps(extras, indent=2) if extras else ""]))


class _Echo:
    """A file-like object whose write returns the line, for streaming CSV."""

    def write(self, value: str) -> str:
        return value


@admin.register(AIInteraction)
class AIInteractionAdmin(RecordAdmin):
    list_display = (
        "created_at",
        "owner",
        "status",
        "provider",
        "model",
        "cached",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
    )
    list_filter = ("status", "kind", ProviderFilter, ModelFilter, "cached", "mode", "created_at")
    search_fields = ("=id", "=prompt_hash", "=owner__username")
    search_help_text = "An interaction id, a prompt hash, or an owner's username."
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    actions = ("retry_interactions", "export_csv")
    fieldsets = (
        (
            None,
            {"fields": ("id", "owner", "status", "kind", "mode", "provider", "model", "cached")},
        ),
        (
            "Conversation",
            {"fields": ("conversation", "response_text", "response_message_json", "params_json")},
        ),
        (
            "Outcome",
            {
                "fields": (
                    "finish_reason",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                    "latency_ms",
                    "error_json",
                    "attempts_json",
                )
            },
        ),
        (
            "Trace",
            {
                "fields": (
                    "task",
                    "prompt_hash",
                    "metadata_json",
                    "created_at",
                    "started_at",
                    "completed_at",
                )
            },
        ),
    )

    def search_filter(self, term: str) -> Q:
        if (interaction_id := as_uuid(term)) is not None:
            return Q(pk=interaction_id)
        if len(term) == 64:
            return Q(prompt_hash=term)
        return Q(owner__in=owned_by_username(term))

    @admin.display(description="messages")
    def conversation(self, interaction: AIInteraction) -> str:
        return (
            format_html_join(
                "",
                '<p><strong>{}</strong></p><pre style="white-space: pre-wrap">{}</pre>',
                ((message.get("role", ""), _shown(message)) for message in interaction.messages),
            )
            or "—"
        )

    params_json = json_display("params")
    response_message_json = json_display("response_message", "response message")
    error_json = json_display("error")
    attempts_json = json_display("attempts")
    metadata_json = json_display("metadata")

    @admin.display(description="response")
    def response_text(self, interaction: AIInteraction) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', interaction.response)

    @admin.action(description="Retry selected failed interactions")
    def retry_interactions(self, request: HttpRequest, queryset: QuerySet[AIInteraction]) -> None:
        self.apply_service(
            request,
            queryset,
            lambda interaction: interaction_retry(interaction=interaction),
            "Retried {count} interaction(s).",
        )

    @admin.action(description="Export selected interactions as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AIInteraction]):
        writer = csv.writer(_Echo())
        rows = queryset.order_by("-created_at").values_list(*CSV_COLUMNS).iterator(chunk_size=2000)
        lines = (writer.writerow(row) for row in rows)
        response = StreamingHttpResponse(
            (line for part in ([writer.writerow(CSV_COLUMNS)], lines) for line in part),
            content_type="text/csv",
        )
        response["Content-Disposition"] = 'attachment; filename="ai-interactions.csv"'
        return response
