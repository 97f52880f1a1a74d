"""Liveness, readiness and the staff-only detailed health report."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.health.selectors import health_detail, readiness_report
from apps.health.serializers import HealthDetailSerializer, LiveSerializer, ReadinessSerializer
from contextos.schema import error_responses

_UNAVAILABLE = OpenApiResponse(ReadinessSerializer, description="A dependency is down.")


class _PublicProbe(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []


class LiveView(_PublicProbe):
    @extend_schema(summary="Liveness", auth=[], responses={200: LiveSerializer}, tags=["health"])
    def get(self, request: Request) -> Response:
        """200 while the process is up; touches no dependency."""
        return Response({"status": "ok"})


class ReadyView(_PublicProbe):
    @extend_schema(
        summary="Readiness",
        auth=[],
        responses={200: ReadinessSerializer, 503: _UNAVAILABLE},
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        """Database, cache and broker, each probed; answers within 3 seconds.

        Each web process probes at most once per `HEALTH_READY_CACHE_SECONDS`
        (default 1) and answers from that report in between.
        """
        report = readiness_report(max_age=settings.HEALTH_READY_CACHE_SECONDS)
        code = (
            status.HTTP_200_OK if report["status"] == "ok" else status.HTTP_503_SERVICE_UNAVAILABLE
        )
        return Response(report, status=code)


class HealthDetailView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Detailed health (staff)",
        responses={
            200: HealthDetailSerializer,
            **error_responses(401, 403),
            503: OpenApiResponse(HealthDetailSerializer, description="A dependency is down."),
        },
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        """Readiness plus workers online, queue depths, beat heartbeat, migrations, version."""
        report = health_detail()
        code = (
            status.HTTP_200_OK if report["status"] == "ok" else status.HTTP_503_SERVICE_UNAVAILABLE
        )
        return Response(report, status=code)
