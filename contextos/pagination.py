"""Cursor pagination for every list: stable under inserts, fast at any depth."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework import pagination
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.views import APIView

from contextos.exceptions import ValidationFailed


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "-created_at"

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: APIView | None = None
    ) -> list[Any] | None:
        # A cursor is only ever one this API wrote into a `next` or `previous` link:
        # one that does not decode (NotFound in DRF) or whose position is not a value
        # of the ordering field (found when the query is built) is the client's error.
        try:
            return super().paginate_queryset(queryset, request, view)
        except (NotFound, DjangoValidationError):
            raise self._invalid_cursor() from None

    def _invalid_cursor(self) -> ValidationFailed:
        param = self.cursor_query_param
        return ValidationFailed(
            f"Invalid '{param}' query parameter: use the 'next' or 'previous' link of a list.",
            code="invalid_cursor",
            details={param: ["Not a cursor this API issued."]},
        )
