"""Admin for API keys: read-only detail with Revoke; a new key's raw value is shown once,
on the page the creation answers with (never in a message, which travels in a cookie)."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_revoke
from contextos.admin import RecordAction, RecordPageMixin, status_badge
from contextos.exceptions import Conflict


def key_state(api_key: APIKey) -> str:
    if api_key.is_revoked:
        return "revoked"
    return "expired" if api_key.is_expired else "active"


@admin.register(APIKey)
class APIKeyAdmin(RecordPageMixin, admin.ModelAdmin):
    list_display = (
        "prefix",
        "name",
        "user",
        "team",
        "state",
        "created_at",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("created_at", "expires_at", "revoked_at")
    search_fields = ("prefix", "name", "user__username", "user__email")
    list_select_related = ("user", "team")
    date_hierarchy = "created_at"
    autocomplete_fields = ("user",)
    actions = ("revoke_keys",)
    fields = (
        "user",
        "team",
        "name",
        "prefix",
        "expires_at",
        "created_at",
        "updated_at",
        "revoked_at",
        "last_used_at",
    )
    readonly_fields = fields

    def get_fields(self, request: HttpRequest, obj: APIKey | None = None) -> tuple[str, ...]:
        return ("user", "name", "expires_at") if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None) -> tuple:
        return () if obj is None else self.readonly_fields

    @admin.display(description="state")
    def state(self, api_key: APIKey) -> str:
        return status_badge(key_state(api_key))

    def record_status(self, api_key: APIKey) -> str:
        return key_state(api_key)

    def record_actions(self, request: HttpRequest, api_key: APIKey) -> list[RecordAction]:
        if api_key.is_revoked:
            return []
        return [
            RecordAction(
                "revoke",
                "Revoke",
                lambda api_key, actor: api_key_revoke(api_key=api_key, actor=actor),
                "API key {obj.prefix} revoked: it is refused from now on.",
                danger=True,
            )
        ]

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        api_key, raw_key = api_key_create(
            user=obj.user, name=obj.name, expires_at=obj.expires_at, actor=request.user
        )
        # The admin goes on with ``obj`` (its log entry, then ``response_add``).
        obj.__dict__.update(api_key.__dict__)
        request._contextos_raw_key = raw_key

    def response_add(self, request: HttpRequest, obj: APIKey, post_url_continue: Any = None):
        """The new key's page: the raw key, once, in the response body only."""
        return TemplateResponse(
            request,
            "admin/accounts/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "API key created",
                "opts": self.model._meta,
                "api_key": obj,
                "raw_key": request._contextos_raw_key,
                "key_url": reverse("admin:accounts_apikey_change", args=[obj.pk]),
            },
        )  # The admin's pages are never cached (``Cache-Control: no-store``): nor is this one.

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> HttpResponse | None:
        revoked, already = [], []
        for api_key in queryset:
            try:
                api_key_revoke(api_key=api_key, actor=request.user)
            except Conflict:  # already revoked, maybe a moment ago by someone else
                already.append(api_key.prefix)
            else:
                revoked.append(api_key.prefix)
        if revoked:
            self.message_user(request, f"Revoked {len(revoked)} API key(s): {', '.join(revoked)}.")
        if already:
            self.message_user(
                request,
                f"Already revoked, left as they were: {', '.join(already)}.",
                level="WARNING",
            )
        return None
