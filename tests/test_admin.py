"""The admin: ContextOS branding, staff only, Celery results and schedules registered."""

import pytest


@pytest.mark.django_db
def test_admin_requires_a_staff_login(client, user):
    assert client.get("/admin/").status_code == 302
    client.force_login(user)
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_admin_index_is_branded_and_lists_keys_results_and_schedules(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    page = client.get("/admin/").content.decode()
    assert "ContextOS" in page
    for changelist in (
        "/admin/accounts/apikey/",
        "/admin/django_celery_results/taskresult/",
        "/admin/django_celery_beat/periodictask/",
    ):
        assert changelist in page
        assert client.get(changelist).status_code == 200
