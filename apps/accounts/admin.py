"""Admin for API keys: the raw key is shown once, in the message after creation."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_revoke, api_key_update


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "name",
        "user",
        "state",
        "created_at",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("created_at", "expires_at", "revoked_at")
    search_fields = ("prefix", "name", "user__username", "user__email")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    autocomplete_fields = ("user",)
    actions = ("revoke_keys",)
    readonly_fields = ("prefix", "created_at", "updated_at", "revoked_at", "last_used_at")

    def get_fields(self, request: HttpRequest, obj: APIKey | None = None):
        if obj is None:
            return ("user", "name", "expires_at")
        return ("user", "name", "prefix", "expires_at", *self.readonly_fields[1:])

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None):
        if obj is None:
            return ()
        return ("user", *self.readonly_fields)

    @admin.display(description="state")
    def state(self, obj: APIKey) -> str:
        if obj.is_revoked:
            return "revoked"
        return "expired" if obj.is_expired else "active"

    def save_model(self, request: HttpRequest, obj: APIKey, form, change: bool) -> None:
        if change:
            api_key_update(api_key=obj, name=obj.name, expires_at=obj.expires_at)
            return
        api_key, raw_key = api_key_create(user=obj.user, name=obj.name, expires_at=obj.expires_at)
        # The admin goes on with ``obj`` (log entry, redirect): make it the saved key.
        obj.__dict__.update(api_key.__dict__)
        messages.warning(
            request,
            f"New API key: {raw_key} — copy it now. Only its hash is stored; "
            "it will not be shown again.",
        )

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {queryset.count()} API key(s).", messages.SUCCESS)
