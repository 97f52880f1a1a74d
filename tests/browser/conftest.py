"""The staff console in a real browser: Playwright driving Debian's Chromium against the
integration suite's real web server (gunicorn, production settings), on the test database.

Every page a test opens is watched: console errors and uncaught exceptions, requests that
failed or were answered 400 or more, and requests to any host but the server's (stopped
before they leave). ``assert_clean`` fails listing them; ``assert_fits`` fails when the
page or one of its tables does not fit the 1400 px window (or a table's columns are hidden
in a box scrolled sideways).
"""

import os
import re
import shutil
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.factories import StaffUserFactory
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    ROOT,
    start_web,
    start_worker,
    static_root,
)

SCREENSHOTS = ROOT / "var" / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}
STAFF_USERNAME = "console-admin"
STAFF_PASSWORD = "a-long-console-password-42"
# Production settings publish every task (maintenance jobs too) to this queue.
QUEUE = "default"

expect.set_options(timeout=10_000)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the browser tests that run one after another.

    Package-scoped, not session-scoped: while Playwright's sync API is started, its
    event loop counts as running in this thread, and Django refuses ORM calls from a
    thread with a running loop unless ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set. The browser
    tests need the ORM (seeding, checking rows) and set it for their own time only; the
    other tests a process runs before or after keep Django's check.
    """
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("the browser tests need Debian's chromium (apt-get install chromium)")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # As root (CI containers) Chromium's sandbox cannot start.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = playwright.chromium.launch(executable_path=executable, args=args)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def without_async_unsafe(**env: str | None) -> dict[str, str | None]:
    """Environment for a server or worker started here: the browser's allowance for the
    ORM (see ``browser``) is this process's only, not theirs (None drops a variable)."""
    return {"DJANGO_ALLOW_ASYNC_UNSAFE": None, **env}


@pytest.fixture
def console(start_web) -> str:  # noqa: F811
    """The base URL of a real web server on the test database. Its tasks (maintenance
    jobs included) go to the ``default`` queue, which ``start_worker(queue=QUEUE)`` serves."""
    return start_web(**without_async_unsafe(CELERY_MAINTENANCE_QUEUE=QUEUE))


@pytest.fixture
def console_admin(transactional_db):
    """A superuser who can log in to the server: the tests hash passwords with MD5,
    which production settings do not accept, so the password is PBKDF2-hashed here."""
    admin = StaffUserFactory(username=STAFF_USERNAME, is_superuser=True)
    hasher = PBKDF2PasswordHasher()
    admin.password = hasher.encode(STAFF_PASSWORD, hasher.salt())
    admin.save(update_fields=["password"])
    return admin


# --- What a page did wrong ------------------------------------------------------------


@dataclass
class Record:
    """What the pages of one browser tab did that a clean page does not."""

    base_url: str
    server_log: Callable[[], str]
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[str] = field(default_factory=list)
    off_host: list[str] = field(default_factory=list)
    # (status, path) pairs a test expects to be answered with that status.
    expected: set[tuple[int, str]] = field(default_factory=set)
    server_failed: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def problems(self) -> list[str]:
        """Each thing seen, one a line; after a server error, the end of the server's log."""
        problems = [
            *(f"console error: {text}" for text in self.console_errors),
            *(f"request failed: {text}" for text in self.failed_requests),
            *(f"error response: {text}" for text in self.error_responses),
            *(f"request to another host (blocked): {url}" for url in self.off_host),
        ]
        if self.server_failed:
            problems.append(f"server log (end):\n{self.server_log()[-4000:]}")
        return problems

    def clear(self) -> None:
        for found in (
            self.console_errors,
            self.failed_requests,
            self.error_responses,
            self.off_host,
        ):
            found.clear()
        self.server_failed = False


_records: "weakref.WeakKeyDictionary[Page, Record]" = weakref.WeakKeyDictionary()


def record_of(page: Page) -> Record:
    return _records[page]


def _watch(page: Page, record: Record) -> None:
    def elsewhere(route: Route) -> None:
        record.off_host.append(route.request.url)
        route.abort("blockedbyclient")

    def console_message(message) -> None:
        # "Failed to load resource" repeats a failed request or an error response, which
        # are recorded (or expected) as such.
        if message.type != "error" or message.text.startswith("Failed to load resource"):
            return
        where = message.location or {}
        at = f" ({where['url']}:{where.get('lineNumber', 0) + 1})" if where.get("url") else ""
        record.console_errors.append(f"{message.text}{at}")

    def failed(request) -> None:
        if request.url in record.off_host:
            return
        # A live refresh still on its way when staff click a button is cancelled by the
        # navigation the click starts: the browser's doing, not a failure of the server.
        if request.resource_type == "fetch" and request.failure == "net::ERR_ABORTED":
            return
        record.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def answered(response) -> None:
        path = urlsplit(response.url).path
        if response.status >= 400 and (response.status, path) not in record.expected:
            record.error_responses.append(
                f"{response.request.method} {response.url} answered {response.status}"
            )
            record.server_failed |= response.status >= 500

    # Only requests to other hosts are intercepted (matched in the browser's driver), so
    # that the server's own are not slowed down by a round trip through this process.
    page.context.route(re.compile(rf"^[a-z]+://(?!{re.escape(record.host)}/)"), elsewhere)
    page.on("console", console_message)
    page.on("pageerror", lambda error: record.console_errors.append(f"uncaught: {error}"))
    page.on("requestfailed", failed)
    page.on("response", answered)
    # A confirmation asked before an action is answered yes, as staff would.
    page.on("dialog", lambda dialog: dialog.accept())


@pytest.fixture
def page(
    browser: Browser,
    console: str,
    start_web,  # noqa: F811
    transactional_db,
) -> Iterator[Page]:
    """A tab of 1400 x 1000 on the ``console`` server, watched (see ``assert_clean``); closed
    before the test's rows are deleted, so that no live refresh asks for them."""
    context = browser.new_context(viewport=VIEWPORT, base_url=console)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    _records[tab] = Record(base_url=console, server_log=lambda: start_web.output(console))
    _watch(tab, _records[tab])
    yield tab
    context.close()


def expect_status(page: Page, status: int, path: str) -> None:
    """Let ``path`` be answered ``status`` (>= 400) on this page without it counting."""
    record_of(page).expected.add((status, path))


def assert_clean(page: Page) -> None:
    """Fail listing every console error, failed request, error response and request to
    another host seen since the page was opened (or since the last ``visit``)."""
    problems = record_of(page).problems()
    assert not problems, f"{page.url}:\n" + "\n".join(problems)


def visit(page: Page, path: str) -> None:
    """Open ``path`` on the server in a fresh document, forgetting what earlier pages did.

    Going through about:blank first ends the last page's requests (a live refresh's
    fetch) before the record is cleared, so that they do not count for the next one.
    A page that refreshes itself is watched for a refresh or two more.
    """
    page.goto("about:blank")
    record_of(page).clear()
    page.goto(path)
    if page.locator("[data-live-refresh]").count():
        page.wait_for_timeout(2500)


# --- Layout -----------------------------------------------------------------------------

_MEASURE = """() => {
    const classes = (element) => [...element.classList].map((name) => `.${name}`).join("");
    const describe = (table, index) => {
        if (table.id) return `table#${table.id}`;
        const caption = table.querySelector("caption");
        const owner = table.closest("[id]");
        return [
            owner ? `#${owner.id}` : "",
            `table${classes(table)}`,
            `(${index + 1} of the page's tables)`,
            caption ? `captioned "${caption.innerText.trim().slice(0, 60)}"` : "",
        ].filter(Boolean).join(" ");
    };
    // The nearest box that clips or scrolls the table sideways, if any.
    const scroller = (table) => {
        for (let box = table.parentElement; box && box !== document.body; box = box.parentElement) {
            if (getComputedStyle(box).overflowX !== "visible") return box;
        }
        return null;
    };
    const x = window.scrollX;
    return {
        window: window.innerWidth,
        page: document.documentElement.scrollWidth,
        tables: [...document.querySelectorAll("table")].map((table, index) => {
            const box = table.getBoundingClientRect();
            const clip = scroller(table);
            return {
                name: describe(table, index),
                right: Math.round(box.right + x),
                width: Math.round(box.width),
                shown: box.width > 0 && box.height > 0,
                clip: clip && {
                    name: clip.id ? `#${clip.id}` : `${clip.tagName.toLowerCase()}${classes(clip)}`,
                    // The right edge of what it shows, inside its border and scroll bar.
                    right: Math.round(
                        clip.getBoundingClientRect().left + clip.clientLeft + clip.clientWidth + x
                    ),
                },
            };
        }),
    };
}"""


def overflow_problems(page: Page) -> list[str]:
    """What does not fit the window: the page itself wider than it, or a table ending past
    its right edge or cut off by a box that scrolls it sideways (its right part hidden
    until scrolled to, even when that box fits the window)."""
    measured = page.evaluate(_MEASURE)
    window = measured["window"]
    problems = []
    if measured["page"] > window:
        problems.append(f"the page is {measured['page']} px wide in a {window} px window")
    for table in measured["tables"]:
        if not table["shown"]:
            continue
        if table["right"] > window:
            problems.append(
                f"{table['name']} is {table['width']} px wide and ends at "
                f"{table['right']} px, past the {window} px window"
            )
        elif table["clip"] and table["right"] > table["clip"]["right"] + 1:
            problems.append(
                f"{table['name']} is {table['width']} px wide and ends at {table['right']} px, "
                f"cut off at {table['clip']['right']} px by {table['clip']['name']} "
                "(scrolled sideways)"
            )
    return problems


def assert_fits(page: Page) -> None:
    problems = overflow_problems(page)
    assert not problems, f"{page.url}:\n" + "\n".join(problems)


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``var/screenshots/<name>.png`` (a CI artefact)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-')}.png"
    page.screenshot(path=path, full_page=True)
    return path


# --- Logging in ----------------------------------------------------------------------------


def log_in(page: Page, username: str = STAFF_USERNAME, password: str = STAFF_PASSWORD) -> None:
    """Log in through the admin's login form, as staff do; land on the dashboard."""
    visit(page, "/admin/login/?next=/admin/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{record_of(page).base_url}/admin/")
    expect(page.locator("#user-tools")).to_contain_text(username)
