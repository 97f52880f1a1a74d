"""The self-service keys API: a user's own keys (staff: every key), created with limits
no looser than the caller's, tightened, revoked."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.authentication import request_api_key
from apps.accounts.models import APIKey
from apps.governance.selectors import key_get, key_list, key_spend
from apps.governance.serializers import (
    KeyCreatedSerializer,
    KeyCreateSerializer,
    KeySerializer,
    KeyUpdateSerializer,
)
from apps.governance.services import key_change, key_issue, key_revoke
from contextos.schema import ITEM_ID, error_responses
from contextos.views import ITEM_ID_PATTERN

ERRORS = error_responses(400, 401, 403, 404, 429)


class KeyViewSet(viewsets.GenericViewSet):
    serializer_class = KeySerializer
    lookup_value_regex = ITEM_ID_PATTERN
    queryset = APIKey.objects.none()  # for the schema; reads go through the selectors

    def get_object(self) -> APIKey:
        return key_get(user=self.request.user, key_id=self.kwargs["pk"])

    def _render(self, api_key: APIKey, code: int = status.HTTP_200_OK) -> Response:
        # Read again: the answer shows the key's limits as they now stand.
        api_key = key_get(user=self.request.user, key_id=api_key.pk)
        return Response(
            KeySerializer(api_key, context={"spend": key_spend([api_key])}).data, status=code
        )

    @extend_schema(
        summary="List API keys",
        description="Your keys (staff: every key), newest first, with limits and spend.",
        responses={200: KeySerializer(many=True), **ERRORS},
        tags=["keys"],
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(key_list(user=request.user))
        data = KeySerializer(page, many=True, context={"spend": key_spend(page)}).data
        return self.get_paginated_response(data)

    @extend_schema(
        summary="Create an API key",
        description=(
            "The raw key is in this answer only. Limits left out stay unset on the key; "
            "those given may not be looser than the calling key's, your user's or the "
            "team's (400 naming the field)."
        ),
        request=KeyCreateSerializer,
        responses={201: KeyCreatedSerializer, **ERRORS},
        tags=["keys"],
    )
    def create(self, request: Request) -> Response:
        data = KeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, raw_key = key_issue(
            user=request.user,
            caller_key=request_api_key(request),
            name=data.validated_data["name"],
            expires_at=data.validated_data["expires_at"],
            team_id=data.validated_data["team"],
            limits=data.limits(),
        )
        api_key = key_get(user=request.user, key_id=api_key.pk)
        context = {"spend": key_spend([api_key]), "raw_key": raw_key}
        return Response(
            KeyCreatedSerializer(api_key, context=context).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Get an API key",
        description="The key with its limits and its spend in the current budget period.",
        parameters=[ITEM_ID],
        responses={200: KeySerializer, **ERRORS},
        tags=["keys"],
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return self._render(self.get_object())

    @extend_schema(
        summary="Rename an API key or tighten its limits",
        description="A limit may only be lowered (or set where unset); a looser value is 400.",
        parameters=[ITEM_ID],
        request=KeyUpdateSerializer,
        responses={200: KeySerializer, **ERRORS},
        tags=["keys"],
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        data = KeyUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key = self.get_object()
        key_change(
            api_key=api_key,
            actor=request.user,
            caller_key=request_api_key(request),
            name=data.validated_data.get("name"),
            limits=data.limits(),
        )
        return self._render(api_key)

    @extend_schema(
        summary="Revoke an API key",
        description="The key stops working at its next request; revoking again changes nothing.",
        parameters=[ITEM_ID],
        responses={200: OpenApiResponse(KeySerializer, description="The revoked key."), **ERRORS},
        tags=["keys"],
    )
    def destroy(self, request: Request, pk: str) -> Response:
        return self._render(key_revoke(api_key=self.get_object(), actor=request.user))
