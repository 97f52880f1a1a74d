"""The AI domain's counters on ``/metrics``: requests, tokens and cost per provider and model."""

from apps.ai_interactions.models import AIInteraction
from contextos import metrics

AI_REQUESTS = metrics.SharedCounter(
    "contextos_ai_requests_total",
    "AI interactions finished, by provider, model, status (succeeded, failed) and cache hit.",
    ("provider", "model", "status", "cached"),
)
AI_TOKENS = metrics.SharedCounter(
    "contextos_ai_tokens_total",
    "Tokens of finished AI interactions, by provider, model and direction (input, output).",
    ("provider", "model", "direction"),
)
AI_COST = metrics.SharedCounter(
    "contextos_ai_cost_usd_total",
    "Cost in USD of finished AI interactions (cache hits cost nothing), by provider and model.",
    ("provider", "model"),
)


def interaction_finished(interaction: AIInteraction) -> None:
    """Count an interaction that reached its final state (succeeded or failed)."""
    provider, model = interaction.provider, interaction.model
    metrics.count(
        AI_REQUESTS.by(provider, model, interaction.status, str(interaction.cached).lower()),
        AI_TOKENS.by(provider, model, "input", amount=interaction.input_tokens or 0),
        AI_TOKENS.by(provider, model, "output", amount=interaction.output_tokens or 0),
        AI_COST.by(provider, model, amount=float(interaction.cost_usd or 0)),
    )
