"""Every page of the staff console at 1400 x 1000 on a realistic data set: the dashboard in
each window, every registered model's list and a detail page of each model with rows. Each
fits the window, logs no error, fails no request and asks no other host for anything; the
API docs (Swagger UI, Redoc) too, but for the width.

One server and one tab for them all (a server takes seconds to start): each page is a
subtest, so that every page with a problem is reported, not only the first.
"""

from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse

from tests.browser.conftest import (
    assert_clean,
    log_in,
    overflow_problems,
    record_of,
    screenshot,
    visit,
)
from tests.browser.console_data import ConsoleData, console_data

pytestmark = [pytest.mark.browser, pytest.mark.server]

DASHBOARD_WINDOWS = ("1h", "24h", "7d", "30d")
# Pages that are not the admin's own: checked for errors and other hosts, not for width.
API_DOCS = (("api-docs-swagger", "/api/docs/"), ("api-docs-redoc", "/api/redoc/"))


def console_pages(data: ConsoleData) -> list[tuple[str, str]]:
    """(name, path) of each page: the dashboard, then every registered model's list (a
    model registered later is covered too), then detail pages."""
    index = reverse("admin:index")
    pages = [("dashboard", index)]
    pages += [(f"dashboard-{window}", f"{index}?window={window}") for window in DASHBOARD_WINDOWS]
    models = sorted(admin.site._registry, key=lambda model: model._meta.label)
    for model in models:
        app, name = model._meta.app_label, model._meta.model_name
        pages.append((f"list-{app}-{name}", reverse(f"admin:{app}_{name}_changelist")))
    for model in models:
        app, name = model._meta.app_label, model._meta.model_name
        rows = data.shown.get(model._meta.label) or model._default_manager.order_by("pk")[:1]
        for number, row in enumerate(rows, start=1):
            path = reverse(f"admin:{app}_{name}_change", args=[quote(row.pk)])
            pages.append((f"change-{app}-{name}-{number}", path))
    return pages


def test_every_console_page_fits_the_window_and_is_clean(
    page, console_admin, fake_openai, subtests
):
    data = console_data(admin=console_admin, upstream=fake_openai)
    log_in(page)

    for name, path in console_pages(data):
        with subtests.test(msg=name, path=path):
            visit(page, path)
            if not name.startswith("change-"):
                screenshot(page, name)
            problems = overflow_problems(page) + record_of(page).problems()
            if urlsplit(page.url).path != urlsplit(path).path:
                problems.append(f"landed on {page.url} instead")
            if problems:
                pytest.fail(f"{path}:\n" + "\n".join(problems), pytrace=False)

    # Not screenshotted: a page of the whole API is some 26,000 px tall.
    for name, path in API_DOCS:
        with subtests.test(msg=name, path=path):
            visit(page, path)
            page.wait_for_load_state("networkidle")  # the docs load the schema afterwards
            assert_clean(page)
