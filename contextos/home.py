"""The pages a newcomer lands on: ``/`` (links to everything) and ``/api/v1/`` (the API's map).

Both are public and name only what the schema and the docs already show.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contextos import __version__


def _links(request: HttpRequest) -> dict[str, str]:
    def url(name: str) -> str:
        return request.build_absolute_uri(reverse(name))

    return {
        "docs": url("swagger-ui"),
        "redoc": url("redoc"),
        "schema": url("schema"),
        "health": url("health:live"),
        "readiness": url("health:ready"),
        "task_types": url("tasks:types"),
        "tasks": url("tasks:task-list"),
        "models": url("ai:models"),
        "interactions": url("ai:interaction-list"),
        "usage": url("ai:usage"),
        "keys": url("keys:key-list"),
        "openai_chat_completions": url("openai-chat"),
        "openai_models": url("openai-models"),
        "metrics": url("metrics"),
        "admin": url("admin:index"),
    }


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """``/``: what is running here and where to go next."""
    context = {
        "version": __version__,
        "links": _links(request),
        "openai_base_url": request.build_absolute_uri("/v1"),
    }
    return render(request, "contextos/home.html", context)


class APIRootView(APIView):
    """``/api/v1/``: the API's endpoints (each needs ``Authorization: Bearer <api key>``
    except health, the schema and its docs). Like the docs, open and outside the schema."""

    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response(
            {
                "name": "ContextOS API",
                "version": __version__,
                "authentication": "Authorization: Bearer <api key>",
                "endpoints": _links(request),
            }
        )
