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
