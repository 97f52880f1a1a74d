"""Error reporting to Sentry (when `SENTRY_DSN` is set), prompts, answers and secrets removed.

Nothing a client asked a model, nor what it answered, nor any credential
leaves in an event: :func:`scrub_event` masks them in the request, extra
data, breadcrumbs and stack frame variables before an event is sent.
"""

import re
from typing import Any

SCRUBBED = "[Filtered]"

# Keys (lower case, "-" read as "_") whose values are prompts, answers or secrets.
_SENSITIVE_KEYS = frozenset(
    {
        # What was asked and answered.
        "prompt",
        "prompts",
        "messages",
        "message_content",
        "content",
        "response",
        "responses",
        "text",
        "answer",
        "completion",
        "choices",
        "delta",
        "system",
        # Credentials.
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "proxy_authorization",
        "cookie",
        "cookies",
        "set_cookie",
        "password",
        "token",
        "access_token",
        "refresh_token",
        "secret",
        "secret_key",
        "dsn",
        "sentry_dsn",
        "raw_key",
        "key_hash",
    }
)
_SENSITIVE_KEY_PARTS = ("password", "secret", "api_key", "apikey", "credential")
# Credentials that may appear inside any string: ContextOS keys, provider keys, bearer tokens.
_SECRET_VALUES = re.compile(
    r"ctx_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{8,}|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]+"
)
# Local variables of these modules are dropped whole: nearly all of them hold prompt or answer text.
_PROMPT_MODULES = ("apps.ai_interactions",)


def _sensitive(key: object) -> bool:
    name = str(key).lower().replace("-", "_")
    return name in _SENSITIVE_KEYS or any(part in name for part in _SENSITIVE_KEY_PARTS)


def _scrub(value: Any) -> Any:
    """``value`` with sensitive keys masked at any depth and credentials masked in strings."""
    if isinstance(value, dict):
        return {key: SCRUBBED if _sensitive(key) else _scrub(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(inner) for inner in value]
    if isinstance(value, str):
        return _SECRET_VALUES.sub(SCRUBBED, value)
    return value


def _scrub_frames(stacktrace: dict[str, Any] | None) -> None:
    for frame in (stacktrace or {}).get("frames") or []:
        if "vars" not in frame:
            continue
        if str(frame.get("module") or "").startswith(_PROMPT_MODULES):
            frame["vars"] = dict.fromkeys(frame["vars"], SCRUBBED)
        else:
            frame["vars"] = _scrub(frame["vars"])


def _scrub_request(request: dict[str, Any]) -> None:
    if "data" in request:
        data = request["data"]
        # A body Sentry kept unparsed cannot be masked key by key.
        request["data"] = _scrub(data) if isinstance(data, dict | list) else SCRUBBED
    for part in ("headers", "env"):
        if isinstance(request.get(part), dict):
            request[part] = _scrub(request[part])
    if "cookies" in request:
        request["cookies"] = SCRUBBED
    if isinstance(request.get("query_string"), str):
        request["query_string"] = _SECRET_VALUES.sub(SCRUBBED, request["query_string"])


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry's ``before_send``: mask prompts, answers and credentials everywhere they travel."""
    if isinstance(event.get("request"), dict):
        _scrub_request(event["request"])
    for part in ("extra", "contexts", "tags", "user"):
        if isinstance(event.get(part), dict):
            event[part] = _scrub(event[part])
    breadcrumbs = event.get("breadcrumbs")
    crumbs = breadcrumbs.get("values", []) if isinstance(breadcrumbs, dict) else breadcrumbs
    for crumb in crumbs or []:
        if "data" in crumb:
            crumb["data"] = _scrub(crumb["data"])
        if isinstance(crumb.get("message"), str):
            crumb["message"] = _scrub(crumb["message"])
    for exception in (event.get("exception") or {}).get("values") or []:
        _scrub_frames(exception.get("stacktrace"))
        if isinstance(exception.get("value"), str):
            exception["value"] = _scrub(exception["value"])
    for thread in (event.get("threads") or {}).get("values") or []:
        _scrub_frames(thread.get("stacktrace"))
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        for part in ("message", "formatted"):
            if isinstance(logentry.get(part), str):
                logentry[part] = _scrub(logentry[part])
        if "params" in logentry:
            logentry["params"] = _scrub(logentry["params"])
    return event


def init_sentry(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> None:
    """Report errors (and a sample of traces) of Django, Celery and Redis to Sentry."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.redis import RedisIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,
        integrations=[DjangoIntegration(), CeleryIntegration(), RedisIntegration()],
        before_send=scrub_event,
        before_send_transaction=scrub_event,
    )
