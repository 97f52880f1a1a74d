"""The project's URLs plus views that exercise the kernel's error handling."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config import urls as project_urls
from contextos.exceptions import Conflict
from contextos.serializers import StrictInputSerializer

handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500


class EchoInput(StrictInputSerializer):
    name = serializers.CharField(max_length=20)
    count = serializers.IntegerField(min_value=0, required=False)


class EchoView(APIView):
    """An authenticated, throttled endpoint that validates a JSON object."""

    def get(self, request: Request) -> Response:
        return Response({"user": request.user.username})

    def post(self, request: Request) -> Response:
        data = EchoInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(data.validated_data, status=201)


class ExplodingView(APIView):
    permission_classes: list = []

    def get(self, request: Request) -> Response:
        raise RuntimeError("secret database password is hunter2")


class ConflictView(APIView):
    permission_classes: list = []

    def get(self, request: Request) -> Response:
        raise Conflict("Already finished.", details={"status": "succeeded"})


def exploding_django_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret database password is hunter2")


urlpatterns = [
    path("api/v1/_test/echo/", EchoView.as_view()),
    path("api/v1/_test/explode/", ExplodingView.as_view()),
    path("api/v1/_test/conflict/", ConflictView.as_view()),
    path("api/v1/_test/explode-django/", exploding_django_view),
    *project_urls.urlpatterns,
]
