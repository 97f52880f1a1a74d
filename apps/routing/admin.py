"""Admin for providers, routes and deployments.

A provider's key is write-only: the form takes a new one (empty keeps the current
key) and lists and pages show only its last four characters; the encrypted column
is never shown. Each deployment shows its live state: cooling down until (the
breaker in Redis), and its failures and median latency over the last 15 minutes
(from the attempts recorded on AI interactions).

Rows are saved and deleted through the routing services, which record every change in the
audit log.
"""

from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import date_format

from apps.routing.models import Deployment, Provider, Route
from apps.routing.selectors import attach_live_state
from apps.routing.services import (
    deployment_delete,
    deployment_save,
    provider_delete,
    provider_save,
    route_delete,
    route_save,
)

# --- Providers -------------------------------------------------------------------------


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave empty to keep the current key. Stored encrypted.",
    )
    clear_api_key = forms.BooleanField(
        label="Remove the API key", required=False, help_text="The provider gets no key."
    )

    class Meta:
        model = Provider
        fields = (
            "name",
            "kind",
            "base_url",
            "timeout",
            "max_attempts",
            "extra_headers",
            "enabled",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Either set a new key or remove it, not both.")
        return cleaned


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "kind", "base_url", "key", "enabled")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url")
    readonly_fields = ("current_key", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "enabled")}),
        ("Credentials", {"fields": ("current_key", "api_key", "clear_api_key", "extra_headers")}),
        ("Calls", {"fields": ("timeout", "max_attempts")}),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="API key", ordering="api_key_last_four")
    def key(self, provider: Provider) -> str:
        return provider.api_key_last_four or "—"

    @admin.display(description="current API key")
    def current_key(self, provider: Provider) -> str:
        return provider.api_key_last_four or "none"

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        api_key = form.cleaned_data.get("api_key") or None
        if api_key is None and form.cleaned_data.get("clear_api_key"):
            api_key = ""
        provider_save(provider=obj, api_key=api_key, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: Provider) -> None:
        provider_delete(provider=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            provider_delete(provider=provider, actor=request.user)


# --- Routes ----------------------------------------------------------------------------


class RouteForm(forms.ModelForm):
    class Meta:
        model = Route
        fields = ("name", "strategy", "fallbacks")

    def clean_fallbacks(self) -> list[str]:
        fallbacks = self.cleaned_data.get("fallbacks") or []
        if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
            raise forms.ValidationError('A list of route names, such as ["claude-sonnet"].')
        name = self.cleaned_data.get("name")
        if name in fallbacks:
            raise forms.ValidationError("A route cannot be its own fallback.")
        known = set(Route.objects.filter(name__in=fallbacks).values_list("name", flat=True))
        unknown = [f for f in fallbacks if f not in known]
        if unknown:
            raise forms.ValidationError(f"Unknown route(s): {', '.join(unknown)}.")
        return fallbacks


class DeploymentInline(admin.TabularInline):
    """The route's deployments and how they are chosen; prices and limits on each
    deployment's own page (its change link), so the table fits the screen."""

    model = Deployment
    extra = 0
    fields = ("provider", "model", "weight", "priority", "enabled")
    show_change_link = True


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    form = RouteForm
    list_display = ("name", "strategy", "fallback_routes", "deployment_count")
    list_filter = ("strategy",)
    search_fields = ("name",)
    inlines = (DeploymentInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Route]:
        return super().get_queryset(request).annotate(deployment_total=Count("deployments"))

    @admin.display(description="fallbacks")
    def fallback_routes(self, route: Route) -> str:
        return ", ".join(route.fallbacks or ()) or "—"

    @admin.display(description="deployments", ordering="deployment_total")
    def deployment_count(self, route: Route) -> int:
        return route.deployment_total

    def save_model(self, request: HttpRequest, obj: Route, form: Any, change: bool) -> None:
        route_save(route=obj, actor=request.user)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        deployments = formset.save(commit=False)
        for deployment in formset.deleted_objects:
            deployment_delete(deployment=deployment, actor=request.user)
        for deployment in deployments:
            deployment_save(deployment=deployment, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: Route) -> None:
        route_delete(route=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        for route in queryset:
            route_delete(route=route, actor=request.user)


# --- Deployments -----------------------------------------------------------------------


class DeploymentChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # The page's rows, evaluated once, with their live state read for all of them.
        attach_live_state(list(self.result_list))


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = (
        "route",
        "provider",
        "model",
        "weight",
        "priority",
        "prices",
        "context_window",
        "enabled",
        "cooling_down_until",
        "failures_15_min",
        "p50_latency_15_min",
    )
    list_filter = ("enabled", "provider", "route__strategy")
    search_fields = ("route__name", "provider__name", "model")
    list_select_related = ("route", "provider")
    autocomplete_fields = ("route", "provider")
    readonly_fields = (
        "cooling_down_until",
        "failures_15_min",
        "p50_latency_15_min",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("route", "provider", "model", "enabled")}),
        ("Choice", {"fields": ("weight", "priority")}),
        (
            "Prices and limits",
            {
                "fields": (
                    "input_price_per_mtok",
                    "output_price_per_mtok",
                    "context_window",
                    "rpm",
                    "tpm",
                )
            },
        ),
        (
            "Live state",
            {"fields": ("cooling_down_until", "failures_15_min", "p50_latency_15_min")},
        ),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DeploymentChangeList

    def save_model(self, request: HttpRequest, obj: Deployment, form: Any, change: bool) -> None:
        deployment_save(deployment=obj, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: Deployment) -> None:
        deployment_delete(deployment=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        for deployment in queryset.select_related("route", "provider"):
            deployment_delete(deployment=deployment, actor=request.user)

    @admin.display(description="$/Mtok in / out")
    def prices(self, deployment: Deployment) -> str:
        return f"{self.input_price(deployment)} / {self.output_price(deployment)}"

    @admin.display(description="input $/Mtok", ordering="input_price_per_mtok")
    def input_price(self, deployment: Deployment) -> str:
        return format(deployment.input_price_per_mtok.normalize(), "f")

    @admin.display(description="output $/Mtok", ordering="output_price_per_mtok")
    def output_price(self, deployment: Deployment) -> str:
        return format(deployment.output_price_per_mtok.normalize(), "f")

    def _live(self, deployment: Deployment) -> None:
        if deployment.pk is not None and not hasattr(deployment, "_stats"):
            attach_live_state([deployment])  # a change page: this row alone

    @admin.display(description="cooling down until")
    def cooling_down_until(self, deployment: Deployment) -> str:
        if deployment.pk is None:
            return "—"
        self._live(deployment)
        until = deployment._breaker.until
        if until is None:
            return "—"
        moment = datetime.fromtimestamp(until, tz=UTC)
        shown = date_format(timezone.localtime(moment), "DATETIME_FORMAT")
        if until <= timezone.now().timestamp():
            return f"{shown} (ended; the next call probes it)"
        return shown

    @admin.display(description="failures (15 min)")
    def failures_15_min(self, deployment: Deployment) -> int | str:
        if deployment.pk is None:
            return "—"
        self._live(deployment)
        return deployment._stats.failures

    @admin.display(description="p50 latency (15 min)")
    def p50_latency_15_min(self, deployment: Deployment) -> str:
        if deployment.pk is None:
            return "—"
        self._live(deployment)
        p50 = deployment._stats.p50_ms
        return "—" if p50 is None else f"{p50:.0f} ms"
