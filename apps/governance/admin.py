"""Admin for teams (with their members), limits and the audit log.

Every change made here goes through the governance services, so it is recorded in the
audit log; the audit log itself is read-only, for superusers too.
"""

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from apps.accounts.models import Team, TeamMembership
from apps.governance.models import LIMIT_FIELDS, AuditEntry, Limits
from apps.governance.services import (
    limits_set,
    limits_validate,
    team_create,
    team_delete,
    team_member_add,
    team_member_remove,
    team_rename,
)
from contextos.admin import EstimatedCountPaginator, json_display
from contextos.exceptions import ValidationFailed

HOLDERS = ("api_key", "user", "team")


# --- Teams -----------------------------------------------------------------------------


class TeamMembershipInline(admin.TabularInline):
    model = TeamMembership
    extra = 0
    fields = ("user", "role")
    autocomplete_fields = ("user",)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "members", "created_at")
    search_fields = ("name",)
    fields = ("name", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")
    inlines = (TeamMembershipInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def members(self, team: Team) -> int:
        return team.member_count

    def save_model(self, request: HttpRequest, obj: Team, form: Any, change: bool) -> None:
        if change:
            team_rename(team=obj, name=obj.name, actor=request.user)
            return
        team = team_create(name=obj.name, actor=request.user)
        # The admin goes on with ``obj`` (inlines, log entry, redirect): make it the team.
        obj.__dict__.update(team.__dict__)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        team = form.instance
        memberships = formset.save(commit=False)
        for membership in formset.deleted_objects:
            team_member_remove(team=team, user=membership.user, actor=request.user)
        # A row whose user was changed takes the old user out of the team.
        users = get_user_model().objects
        for row in formset.initial_forms:
            if "user" in row.changed_data and row not in formset.deleted_forms:
                old_user = users.get(pk=row.initial["user"])
                team_member_remove(team=team, user=old_user, actor=request.user)
        for membership in memberships:
            team_member_add(
                team=team, user=membership.user, role=membership.role, actor=request.user
            )

    def delete_model(self, request: HttpRequest, obj: Team) -> None:
        team_delete(team=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset:
            team_delete(team=team, actor=request.user)


# --- Limits ----------------------------------------------------------------------------


class LimitsForm(forms.ModelForm):
    class Meta:
        model = Limits
        fields = (*HOLDERS, *LIMIT_FIELDS)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance._state.adding:
            chosen = [holder for holder in HOLDERS if cleaned.get(holder)]
            if len(chosen) != 1:
                raise forms.ValidationError("Choose exactly one: an API key, a user or a team.")
        changes = {field: cleaned[field] for field in LIMIT_FIELDS if field in cleaned}
        try:
            limits_validate(changes)
        except ValidationFailed as error:
            for field, messages in error.details.items():
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


@admin.register(Limits)
class LimitsAdmin(admin.ModelAdmin):
    form = LimitsForm
    list_display = (
        "__str__",
        "allowed_models",
        "rpm_limit",
        "tpm_limit",
        "max_parallel_requests",
        "budget_usd",
        "budget_period",
        "updated_at",
    )
    list_filter = ("budget_period",)
    list_select_related = ("api_key", "user", "team")
    search_fields = ("api_key__prefix", "user__username", "team__name")
    autocomplete_fields = HOLDERS

    def get_fields(self, request: HttpRequest, obj: Limits | None = None) -> tuple[str, ...]:
        return (*HOLDERS, *LIMIT_FIELDS) if obj is None else ("holder", *LIMIT_FIELDS)

    def get_readonly_fields(self, request: HttpRequest, obj: Limits | None = None):
        return () if obj is None else ("holder",)

    @admin.display(description="limits of")
    def holder(self, limits: Limits) -> str:
        return str(limits.api_key or limits.user or limits.team)

    def has_delete_permission(self, request: HttpRequest, obj: Limits | None = None) -> bool:
        # Lifting limits is clearing their fields: a change the audit log records.
        return False

    def save_model(self, request: HttpRequest, obj: Limits, form: Any, change: bool) -> None:
        holder = obj.api_key or obj.user or obj.team
        changes = {field: form.cleaned_data[field] for field in LIMIT_FIELDS}
        limits = limits_set(holder=holder, changes=changes, actor=request.user)
        obj.__dict__.update(limits.__dict__)


# --- Audit log -------------------------------------------------------------------------


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only for everyone: entries are written by services, never edited or deleted."""

    list_display = ("at", "actor", "action", "target_type", "target_repr", "request_id")
    list_filter = ("action", "target_type")
    list_select_related = ("actor",)
    search_fields = ("=target_id", "target_repr", "=request_id", "=actor__username")
    date_hierarchy = "at"
    sortable_by = ("at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    fields = (
        "at",
        "actor",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "before_values",
        "after_values",
        "request_id",
    )
    readonly_fields = fields
    before_values = json_display("before", "before")
    after_values = json_display("after", "after")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
