"""The AI API: ask models, list and inspect interactions, usage."""

from datetime import UTC, datetime, timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import request_api_key
from apps.ai_interactions.catalog import model_list_for
from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.selectors import interaction_get, interaction_list
from apps.ai_interactions.serializers import (
    InteractionCreateSerializer,
    InteractionFilterSerializer,
    InteractionSerializer,
    ModelSerializer,
    UsageQuerySerializer,
    UsageSerializer,
)
from apps.ai_interactions.services import (
    interaction_create,
    interaction_delete,
    interaction_retry,
)
from apps.ai_interactions.usage.selectors import interaction_usage
from contextos.schema import ITEM_ID, error_responses
from contextos.serializers import ErrorSerializer
from contextos.views import ITEM_ID_PATTERN

ERRORS = error_responses(400, 401, 403, 404, 409, 429)
DEFAULT_SPAN = timedelta(days=30)
EARLIEST = datetime.min.replace(tzinfo=UTC)


class ModelListView(APIView):
    @extend_schema(
        summary="Models you can ask",
        responses={200: ModelSerializer(many=True), **ERRORS},
        tags=["ai"],
    )
    def get(self, request: Request) -> Response:
        models = model_list_for(api_key=request_api_key(request), user=request.user)
        return Response(ModelSerializer(models, many=True).data)


class UsageView(APIView):
    @extend_schema(
        summary="Usage per day, model, deployment, key, user, team or tag",
        description=(
            "Totals are exact up to the moment of the request: closed hours come from "
            "hourly rollups, the current hour (and any hour not rolled up yet, or changed "
            "since) from the interactions themselves. The mean latency is exact; the p95 "
            "is estimated from a latency histogram. A call with several tags counts once "
            "under each. Owners see their own calls' usage, staff everyone's."
        ),
        parameters=[
            UsageQuerySerializer,
            OpenApiParameter("from", str, description="Date or date-time (default: 30 days ago)."),
            OpenApiParameter("to", str, description="Date or date-time, exclusive (default: now)."),
        ],
        responses={200: UsageSerializer, **ERRORS},
        tags=["ai"],
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        end = query.validated_data.get("to") or timezone.now()
        # Never before the first representable day, even for a "to" in year 1.
        default_start = max(end, EARLIEST + DEFAULT_SPAN) - DEFAULT_SPAN
        start = query.validated_data.get("from") or default_start
        group_by = query.validated_data["group_by"]
        rows = interaction_usage(
            user=request.user,
            group_by=group_by,
            start=start,
            end=end,
            api_key_id=query.validated_data.get("key"),
            team_id=query.validated_data.get("team"),
            tag=query.validated_data.get("tag"),
            model=query.validated_data.get("model"),
        )
        data = {"group_by": group_by, "from": start, "to": end, "results": rows}
        return Response(UsageSerializer(data).data)


class InteractionViewSet(viewsets.GenericViewSet):
    serializer_class = InteractionSerializer
    lookup_value_regex = ITEM_ID_PATTERN
    queryset = AIInteraction.objects.none()  # for the schema; reads go through the selectors

    def get_object(self) -> AIInteraction:
        return interaction_get(user=self.request.user, interaction_id=self.kwargs["pk"])

    @extend_schema(
        summary="List interactions",
        parameters=[InteractionFilterSerializer],
        responses={200: InteractionSerializer(many=True), **ERRORS},
        tags=["ai"],
    )
    def list(self, request: Request) -> Response:
        filters = InteractionFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = interaction_list(user=request.user, **filters.validated_data)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(InteractionSerializer(page, many=True).data)

    @extend_schema(
        summary="Ask a model",
        request=InteractionCreateSerializer,
        responses={
            201: OpenApiResponse(InteractionSerializer, description="Answered (sync)."),
            202: OpenApiResponse(InteractionSerializer, description="Queued (async)."),
            **error_responses(413),
            502: OpenApiResponse(ErrorSerializer, description="The provider failed."),
            **ERRORS,
        },
        tags=["ai"],
    )
    def create(self, request: Request) -> Response:
        data = InteractionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        interaction = interaction_create(
            owner=request.user,
            api_key=request_api_key(request),
            messages=values["messages"],
            model_name=values.get("model"),
            params=values["params"],
            mode=values["mode"],
            use_cache=values["cache"],
            metadata=values["metadata"],
        )
        code = status.HTTP_202_ACCEPTED if values["mode"] == "async" else status.HTTP_201_CREATED
        return Response(InteractionSerializer(interaction).data, status=code)

    @extend_schema(
        summary="Get an interaction",
        parameters=[ITEM_ID],
        responses={200: InteractionSerializer, **ERRORS},
        tags=["ai"],
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(InteractionSerializer(self.get_object()).data)

    @extend_schema(
        summary="Delete an interaction and its cached answer",
        parameters=[ITEM_ID],
        responses={204: None, **ERRORS},
        tags=["ai"],
    )
    def destroy(self, request: Request, pk: str) -> Response:
        interaction_delete(interaction=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Ask again for a failed interaction",
        parameters=[ITEM_ID],
        request=None,
        responses={
            200: OpenApiResponse(InteractionSerializer, description="Answered (sync)."),
            202: OpenApiResponse(InteractionSerializer, description="Queued again (async)."),
            **error_responses(502),
            **ERRORS,
        },
        tags=["ai"],
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        interaction = interaction_retry(interaction=self.get_object(), actor=request.user)
        queued = interaction.status == "queued"
        code = status.HTTP_202_ACCEPTED if queued else status.HTTP_200_OK
        return Response(InteractionSerializer(interaction).data, status=code)
