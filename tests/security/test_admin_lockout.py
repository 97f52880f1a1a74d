"""Admin login against brute force: wrong passwords lock that user name and address for a
cool-off (django-axes), staff see and lift lockouts in the admin, both are audited."""

import urllib.error
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.governance.models import AuditEntry
from tests.factories import StaffUserFactory
from tests.integration.conftest import admin_log_in

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's
ATTACKER = "203.0.113.7"
ELSEWHERE = "198.51.100.20"


def log_in(client: Client, username: str, password: str, ip: str, **headers: str):
    return client.post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip, **headers
    )


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def lock_out(username: str, ip: str = ATTACKER):
    """Send wrong passwords until the lockout: the answer to the last one."""
    client = Client()
    for _ in range(settings.ADMIN_LOGIN_FAILURE_LIMIT - 1):
        response = log_in(client, username, "wrong", ip)
        assert response.status_code == 200
        assert "Please enter the correct username and password" in response.content.decode()
    return log_in(client, username, "wrong", ip)


def cool_off_passes() -> None:
    """Move every counted attempt back past the cool-off, as if it had been waited out."""
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )


def lockout_entries():
    return AuditEntry.objects.filter(action="admin.lockout")


@pytest.fixture
def operator(db):
    return StaffUserFactory(username="operator")


@pytest.fixture
def staff_browser(db):
    client = Client()
    client.force_login(StaffUserFactory(username="security-lead", is_superuser=True))
    return client


@pytest.mark.django_db
def test_the_defaults_lock_after_five_wrong_passwords_for_fifteen_minutes():
    assert settings.AXES_ENABLED
    assert settings.ADMIN_LOGIN_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60


def test_wrong_passwords_lock_that_username_and_ip_for_the_cool_off(operator):
    locked = lock_out("operator")

    # The wrong password that reaches the limit already answers with the lockout page:
    # the admin's own look, how long to wait, 429 with Retry-After.
    page = locked.content.decode()
    assert locked.status_code == 429
    assert locked["Retry-After"] == "900"
    assert "no-cache" in locked["Cache-Control"]
    assert "Login locked" in page
    assert "Try again in 15 minutes" in page
    assert "admin/css/login.css" in page
    assert "ContextOS" in page
    assert 'name="password"' not in page

    # The right password from that address is refused too, and logs nobody in.
    client = Client()
    refused = log_in(client, "operator", PASSWORD, ATTACKER)
    assert refused.status_code == 429
    assert "Login locked" in refused.content.decode()
    assert client.get("/admin/").status_code == 302  # to the login page

    # Another address with the same name, and another name from that address, log in.
    assert logged_in(log_in(Client(), "operator", PASSWORD, ELSEWHERE))
    StaffUserFactory(username="colleague")
    assert logged_in(log_in(Client(), "colleague", PASSWORD, ATTACKER))

    # Once the cool-off has passed, the right password works again, and clears the count.
    cool_off_passes()
    assert logged_in(log_in(client, "operator", PASSWORD, ATTACKER))
    assert client.get("/admin/").status_code == 200
    assert not AccessAttempt.objects.filter(username="operator").exists()


def test_a_spoofed_forwarded_for_header_does_not_escape_the_lockout(operator):
    client = Client()
    for n in range(settings.ADMIN_LOGIN_FAILURE_LIMIT):
        log_in(client, "operator", "wrong", ATTACKER, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    response = log_in(client, "operator", PASSWORD, ATTACKER, HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER}


def test_each_lockout_is_in_the_audit_log_once(operator):
    lock_out("operator")
    client = Client()
    # More attempts during the lockout, some from other browsers (user agents), and the
    # right password: still the one lockout.
    for agent in ("curl/8", "python-requests/2", "Mozilla/5.0"):
        assert (
            log_in(client, "operator", "wrong", ATTACKER, HTTP_USER_AGENT=agent).status_code == 429
        )
    assert log_in(client, "operator", PASSWORD, ATTACKER).status_code == 429

    entry = lockout_entries().get()
    assert entry.actor is None
    assert (entry.target_type, entry.target_id) == ("user", str(operator.pk))
    assert entry.target_repr == "operator"
    assert entry.after["username"] == "operator"
    assert entry.after["ip_address"] == ATTACKER
    assert entry.after["failures"] == settings.ADMIN_LOGIN_FAILURE_LIMIT
    assert entry.request_id

    # A lockout after the cool-off is another one; a name that is nobody's is audited too.
    cool_off_passes()
    lock_out("operator")
    lock_out("nobody-by-this-name", ELSEWHERE)
    assert lockout_entries().count() == 3
    unknown = lockout_entries().get(after__username="nobody-by-this-name")
    assert unknown.target_type == "accessattempt"
    assert unknown.after["ip_address"] == ELSEWHERE


def test_staff_see_the_lockout_in_the_admin_and_deleting_it_lifts_it(operator, staff_browser):
    lock_out("operator")
    attempt = AccessAttempt.objects.get(username="operator")

    listing = staff_browser.get(reverse("admin:axes_accessattempt_changelist"))
    assert listing.status_code == 200
    row = listing.content.decode()
    assert "operator" in row
    assert ATTACKER in row
    assert "Locked Out" in row
    locked_only = staff_browser.get(
        reverse("admin:axes_accessattempt_changelist") + "?locked_out=yes"
    )
    assert "operator" in locked_only.content.decode()
    detail = staff_browser.get(reverse("admin:axes_accessattempt_change", args=[attempt.pk]))
    assert detail.status_code == 200
    assert PASSWORD not in detail.content.decode()
    for log in ("admin:axes_accesslog_changelist", "admin:axes_accessfailurelog_changelist"):
        assert staff_browser.get(reverse(log)).status_code == 200

    delete = reverse("admin:axes_accessattempt_delete", args=[attempt.pk])
    assert staff_browser.get(delete).status_code == 200
    assert staff_browser.post(delete, {"post": "yes"}).status_code == 302
    assert not AccessAttempt.objects.exists()

    # Lifted at once: the right password from the locked address logs in.
    assert logged_in(log_in(Client(), "operator", PASSWORD, ATTACKER))

    cleared = AuditEntry.objects.get(action="admin.lockout_cleared")
    assert cleared.actor.username == "security-lead"
    assert (cleared.target_type, cleared.target_id) == ("user", str(operator.pk))
    assert cleared.before["username"] == "operator"
    assert cleared.before["ip_address"] == ATTACKER
    assert cleared.before["failures"] == settings.ADMIN_LOGIN_FAILURE_LIMIT
    # The audit log lists both, for staff.
    audit = staff_browser.get(reverse("admin:governance_auditentry_changelist")).content.decode()
    assert "admin.lockout_cleared" in audit


def test_lifting_several_lockouts_at_once_audits_each(operator, staff_browser):
    lock_out("operator", ATTACKER)
    lock_out("operator", ELSEWHERE)
    response = staff_browser.post(
        reverse("admin:axes_accessattempt_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": list(AccessAttempt.objects.values_list("pk", flat=True)),
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    cleared = AuditEntry.objects.filter(action="admin.lockout_cleared")
    assert sorted(entry.before["ip_address"] for entry in cleared) == sorted([ATTACKER, ELSEWHERE])
    assert {entry.actor.username for entry in cleared} == {"security-lead"}
    for ip in (ATTACKER, ELSEWHERE):
        assert logged_in(log_in(Client(), "operator", PASSWORD, ip))


def test_lockouts_axes_lifts_itself_are_not_staff_actions(operator):
    lock_out("operator")
    cool_off_passes()
    # The next login deletes the expired attempts: nobody cleared anything.
    assert logged_in(log_in(Client(), "operator", PASSWORD, ATTACKER))
    assert not AccessAttempt.objects.exists()
    assert not AuditEntry.objects.filter(action="admin.lockout_cleared").exists()


@pytest.mark.server
def test_the_lockout_holds_on_the_production_server(start_web):
    # Production settings do not accept the tests' MD5 password hashes.
    operator = StaffUserFactory(username="operator")
    hasher = PBKDF2PasswordHasher()
    operator.password = hasher.encode(PASSWORD, hasher.salt())
    operator.save(update_fields=["password"])
    # Two gunicorn processes: the count and the lockout are shared (the database).
    # Over plain HTTP the browser only sends cookies that are not marked Secure.
    base = start_web(
        WEB_CONCURRENCY="2",
        ADMIN_LOGIN_FAILURE_LIMIT="3",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
    )

    for _ in range(2):
        url, page = admin_log_in(base, "operator", "wrong")
        assert url == f"{base}{LOGIN}"
        assert "Please enter the correct username and password" in page
    for password in ("wrong", PASSWORD, PASSWORD, PASSWORD):
        with pytest.raises(urllib.error.HTTPError) as refused:
            admin_log_in(base, "operator", password)
        assert refused.value.code == 429
        assert refused.value.headers["Retry-After"] == "900"
        assert "Login locked" in refused.value.read().decode()

    entry = AuditEntry.objects.get(action="admin.lockout")
    assert entry.after["ip_address"] == "127.0.0.1"
    assert entry.after["failures"] == 3

    cool_off_passes()
    url, page = admin_log_in(base, "operator", PASSWORD)
    assert url == f"{base}/admin/"
    assert "Log out" in page
