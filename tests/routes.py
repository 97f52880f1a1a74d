"""Routing rows pointing at the fake upstreams, for tests that route calls."""

from apps.routing.models import Deployment, Provider, Route
from tests.fakes.openai_server import FakeOpenAI


def deploy(
    route: Route,
    fake: FakeOpenAI,
    name: str,
    *,
    model: str | None = None,
    max_attempts: int = 1,
    timeout: float | None = None,
    **fields,
) -> Deployment:
    """A deployment of ``route`` on the provider ``name`` (OpenAI-compatible, at ``fake``,
    key ``sk-<name>-key``, created once), upstream model ``<name>-model`` unless given."""
    provider, created = Provider.objects.get_or_create(
        name=name,
        defaults={
            "kind": "openai",
            "base_url": fake.base_url,
            "max_attempts": max_attempts,
            "timeout": timeout,
        },
    )
    if created:
        provider.set_api_key(f"sk-{name}-key")
        provider.save()
    return Deployment.objects.create(
        route=route, provider=provider, model=model or f"{name}-model", **fields
    )


def main_provider(api_key: str) -> Provider:
    """The provider ``main`` (OpenAI-compatible, at a port nothing answers) with ``api_key``."""
    provider = Provider(name="main", kind="openai", base_url="http://127.0.0.1:8001/v1")
    provider.set_api_key(api_key)
    provider.save()
    return provider


def gpt4o_deployment(provider: Provider) -> Deployment:
    """The route ``gpt-4o`` (weighted) with one priced deployment on ``provider``."""
    route = Route.objects.create(name="gpt-4o", strategy="weighted")
    return Deployment.objects.create(
        route=route,
        provider=provider,
        model="gpt-4o-2024-08-06",
        weight=2,
        input_price_per_mtok="2.50",
        output_price_per_mtok="10.00",
        context_window=128000,
    )


def provider_form(provider: Provider, **changes: object) -> dict:
    """The admin's provider change form as posted, with ``changes`` (the key left as is)."""
    data = {
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "timeout": "",
        "max_attempts": "",
        "extra_headers": "{}",
        "enabled": "on",
        "api_key": "",
    }
    data.update(changes)
    return data
