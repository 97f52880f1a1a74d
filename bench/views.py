"""Baselines: the least a view can do for the same job, on the same server."""

import json
import uuid

from django.core.cache import cache
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.ai_interactions.models import AIInteraction
from apps.tasks.models import Task
from bench.wsgi_floor import upstream
from contextos.timing import stage


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
    """Authenticated and throttled: one Redis GET and one interaction INSERT, nothing else.

    Given ``messages`` (a chat request), it writes the row a gateway cache hit writes (the
    answer kept under ``bench:answer``) and answers the cached completion, as the gateway
    does; given a ``prompt``, the row of a REST call.
    """

    def post(self, request: Request) -> Response:
        messages = request.data.get("messages")
        if messages is None:
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
        answer = cache.get("bench:answer") or {}
        now = timezone.now()
        row = AIInteraction.objects.create(
            owner=request.user,
            api_key=request.auth,
            status="succeeded",
            mode="gateway",
            provider="bench",
            model=str(request.data.get("model", "")),
            messages=messages,
            prompt=" ".join(str(m.get("content")) for m in messages),
            prompt_hash="0" * 64,
            response=answer.get("text", ""),
            response_message=answer.get("message"),
            finish_reason=answer.get("finish_reason", ""),
            input_tokens=answer.get("input_tokens", 0),
            output_tokens=answer.get("output_tokens", 0),
            cached=True,
            latency_ms=0.0,
            started_at=now,
            completed_at=now,
        )
        body = answer.get("body") or {}
        return Response({**body, "id": f"chatcmpl-{row.pk.hex}", "model": row.model})


class BareProxyView(APIView):
    """Authenticated and throttled: the chat request forwarded to the benchmark's upstream
    (``BENCH_UPSTREAM_URL``; one urllib3 POST on a kept-alive connection, as the gateway's
    provider sends it) and its JSON answered. Nothing checked, limited, cached or
    recorded: the floor under a gateway call on this server."""

    def post(self, request: Request) -> Response:
        with stage("provider"):
            pool, prefix = upstream()
            answer = pool.urlopen(
                "POST",
                f"{prefix}/chat/completions",
                body=json.dumps(request.data).encode(),
                headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
            )
        return Response(json.loads(answer.data), status=answer.status)
