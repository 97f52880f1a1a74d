"""The models ContextOS can call, their prices, and the provider behind each (from settings)."""

from decimal import Decimal, InvalidOperation

from django.conf import settings

from apps.ai_interactions.providers.base import ModelInfo, Provider
from contextos.exceptions import ValidationFailed

ECHO_MODEL = "echo-1"
# Echo's embedding model: deterministic unit vectors (any model of a provider that embeds will).
ECHO_EMBEDDING_MODEL = "echo-embed-1"


def _parse(provider: str, entries: list[str]) -> list[ModelInfo]:
    models = []
    for entry in entries:
        name, _, prices = entry.partition(":")
        input_price, _, output_price = prices.partition(":")
        try:
            input_price = str(Decimal(input_price or "0"))
            output_price = str(Decimal(output_price or "0"))
        except InvalidOperation:
            raise ValueError(f"{provider} model {entry!r}: prices must be decimals") from None
        models.append(ModelInfo(provider, name.strip(), input_price, output_price))
    return models


def model_list() -> list[ModelInfo]:
    """Every configured model; the default one is marked."""
    configured = [
        ModelInfo("echo", ECHO_MODEL),
        ModelInfo("echo", ECHO_EMBEDDING_MODEL),
        *_parse("openai", settings.OPENAI_MODELS),
        *_parse("anthropic", settings.ANTHROPIC_MODELS),
    ]
    return [
        ModelInfo(
            m.provider,
            m.model,
            m.input_price_per_mtok,
            m.output_price_per_mtok,
            default=m.model == settings.AI_DEFAULT_MODEL,
        )
        for m in configured
    ]


class UnknownModel(ValidationFailed):
    """No configured model has that name (a 400 on the REST API, a 404 on ``/v1``)."""


def model_get(name: str | None) -> ModelInfo:
    """The model called ``name`` (the default when None); unknown names are a 400."""
    name = name or settings.AI_DEFAULT_MODEL
    for model in model_list():
        if model.model == name:
            return model
    raise UnknownModel(
        f"Unknown model {name!r}.",
        details={"model": [f"Unknown model {name!r}; see /api/v1/ai/models/."]},
    )


def provider_for(model: ModelInfo) -> Provider:
    if model.provider == "echo":
        from apps.ai_interactions.providers.echo import EchoProvider

        return EchoProvider(delay_seconds=settings.AI_ECHO_DELAY_MS / 1000)
    if model.provider == "openai":
        from apps.ai_interactions.providers.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            name="openai", base_url=settings.OPENAI_BASE_URL, api_key=settings.OPENAI_API_KEY
        )
    from apps.ai_interactions.providers.anthropic_messages import AnthropicProvider

    return AnthropicProvider(
        name="anthropic", base_url=settings.ANTHROPIC_BASE_URL, api_key=settings.ANTHROPIC_API_KEY
    )


def cost_usd(model: ModelInfo, *, input_tokens: int, output_tokens: int) -> Decimal:
    per_token = Decimal(1_000_000)
    return (
        Decimal(input_tokens) * Decimal(model.input_price_per_mtok)
        + Decimal(output_tokens) * Decimal(model.output_price_per_mtok)
    ) / per_token
