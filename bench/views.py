"""Baselines: the least a view can do for the same job, on the same server."""

import uuid

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.ai_interactions.models import AIInteraction
from apps.tasks.models import Task


class BareView(APIView):
    """A DRF view with no authentication, permission or throttling: the floor for /live."""

    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class BareRowView(APIView):
    """Authenticated and throttled: the caller's interaction row by id, ``.values()`` as JSON."""

    def get(self, request: Request, pk: uuid.UUID) -> Response:
        row = AIInteraction.objects.filter(pk=pk).values().first()
        if row is None or row["owner_id"] != request.user.pk:
            return Response(status=404)
        return Response(row)


class BareInsertView(APIView):
    """An authenticated, throttled view that inserts one task row and nothing else."""

    def post(self, request: Request) -> Response:
        task = Task.objects.create(
            owner=request.user,
            type=str(request.data.get("type", "")),
            params=request.data.get("params", {}),
            request_fingerprint="",
            celery_task_id=str(uuid.uuid4()),
        )
        return Response({"id": str(task.pk)}, status=201)


class BareCacheInsertView(APIView):
    """Authenticated and throttled: one Redis GET and one interaction INSERT, nothing else."""

    def post(self, request: Request) -> Response:
        prompt = str(request.data.get("prompt", ""))
        answer = cache.get("bench:answer") or ""
        row = AIInteraction.objects.create(
            owner=request.user,
            status="succeeded",
            mode="sync",
            provider="echo",
            model="echo-1",
            messages=[{"role": "user", "content": prompt}],
            prompt=prompt,
            prompt_hash="0" * 64,
            response=answer,
            cached=True,
        )
        return Response({"id": str(row.pk)}, status=201)
