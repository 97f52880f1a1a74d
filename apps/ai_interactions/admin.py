"""Admin for AI interactions: filters, search, readable detail, retry and CSV export."""

import csv
import json
from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet, Sum
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.ai_interactions.catalog import model_list
from apps.ai_interactions.models import AIInteraction, InteractionStatus
from apps.ai_interactions.services import interaction_retry
from contextos.admin import (
    OwnerFilter,
    RecordAction,
    RecordAdmin,
    as_uuid,
    duration,
    id_filter,
    json_display,
    moment,
    money,
    owned_by_username,
    preview,
    short_id,
    status_badge,
)

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
        "short_interaction_id",
        "created",
        "owner",
        "status_shown",
        "model_shown",
        "cache",
        "tokens",
        "cost",
        "latency",
        "summary",
    )
    sortable_by = ("created",)
    list_display_links = ("short_interaction_id",)
    list_filter = (
        "status",
        "kind",
        ProviderFilter,
        ModelFilter,
        "cached",
        "mode",
        OwnerFilter,
        id_filter("api_key", "api_key_id", "API key"),
        id_filter("team", "team_id", "team"),
        id_filter("task", "task_id", "task"),
        "created_at",
    )
    list_totals: dict[str, Any] = {
        "requests": Count("pk"),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "cost_usd": Sum("cost_usd"),
    }
    search_fields = ("=id", "=prompt_hash", "=owner__username")
    search_help_text = "An interaction id, a prompt hash, or an owner's username."
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    actions = ("retry_interactions", "export_csv")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "owner",
                    "kind",
                    "mode",
                    "provider",
                    "model",
                    "deployment",
                    "fallback",
                    "cache_shown",
                )
            },
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
                    "cost",
                    "latency",
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
                    "api_key",
                    "team",
                    "tags",
                    "prompt_hash",
                    "metadata_json",
                    "created_at",
                    "started_at",
                    "completed_at",
                )
            },
        ),
    )

    def totals_shown(self, sums: dict[str, Any] | None, count: int) -> list[tuple[str, str]]:
        if sums is None:
            return super().totals_shown(sums, count)
        return [
            ("requests", f"{sums['requests']:,}"),
            ("input tokens", f"{sums['input_tokens'] or 0:,}"),
            ("output tokens", f"{sums['output_tokens'] or 0:,}"),
            ("cost", money(sums["cost_usd"] or 0)),
        ]

    # --- The list

    @admin.display(description="id", ordering="created_at")
    def short_interaction_id(self, interaction: AIInteraction) -> str:
        return short_id(interaction.pk)

    @admin.display(description="created", ordering="created_at")
    def created(self, interaction: AIInteraction) -> str:
        return moment(interaction.created_at)

    @admin.display(description="status")
    def status_shown(self, interaction: AIInteraction) -> str:
        return status_badge(interaction.status)

    @admin.display(description="model")
    def model_shown(self, interaction: AIInteraction) -> str:
        return format_html(
            '<span title="{}">{}</span>',
            interaction.deployment or interaction.provider,
            interaction.model,
        )

    @admin.display(description="cache")
    def cache(self, interaction: AIInteraction) -> str:
        return "hit" if interaction.cached else mark_safe('<span class="muted">miss</span>')

    @admin.display(description="cached")
    def cache_shown(self, interaction: AIInteraction) -> str:
        return "yes, answered from the cache" if interaction.cached else "no"

    @admin.display(description="tokens in / out")
    def tokens(self, interaction: AIInteraction) -> str:
        return format_html(
            '<span class="numeric">{} / {}</span>',
            f"{interaction.input_tokens or 0:,}",
            f"{interaction.output_tokens or 0:,}",
        )

    @admin.display(description="cost")
    def cost(self, interaction: AIInteraction) -> str:
        return money(interaction.cost_usd)

    @admin.display(description="latency")
    def latency(self, interaction: AIInteraction) -> str:
        return duration(interaction.latency_ms)

    @admin.display(description="prompt, or the error")
    def summary(self, interaction: AIInteraction) -> str:
        """The error of a failed call; the last message's text otherwise."""
        if interaction.error:
            return format_html(
                '<span class="error-summary">{}</span>',
                preview(interaction.error.get("message"), 36),
            )
        last = interaction.messages[-1] if interaction.messages else {}
        content = last.get("content") if isinstance(last, dict) else None
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        return preview(content if isinstance(content, str) else "", 36)

    # --- The detail page

    def record_actions(
        self, request: HttpRequest, interaction: AIInteraction
    ) -> list[RecordAction]:
        if interaction.status != InteractionStatus.FAILED:
            return []
        return [
            RecordAction(
                "retry",
                "Retry",
                lambda interaction, actor: interaction_retry(interaction=interaction, actor=actor),
                "Interaction {obj.pk} asked again.",
            )
        ]

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
                '<p><strong>{}</strong></p><pre class="preformatted wrapped">{}</pre>',
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
        return format_html('<pre class="preformatted wrapped">{}</pre>', interaction.response)

    @admin.action(description="Retry selected failed interactions")
    def retry_interactions(self, request: HttpRequest, queryset: QuerySet[AIInteraction]) -> None:
        self.apply_service(
            request,
            queryset,
            lambda interaction: interaction_retry(interaction=interaction, actor=request.user),
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
