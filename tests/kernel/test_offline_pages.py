"""Swagger UI, Redoc and the admin load nothing from another host (and no favicon 404s).

A page fails if its HTML names another host in an attribute (src, href, srcset,
...), or in an inline style or script that would fetch from it; the stylesheets
and scripts the page loads from this host fail if they fetch from another host:
CSS ``url()``/``@import``, or JavaScript that sets a ``src``, a CSS ``url()`` or
calls ``fetch``/``import()``. A URL that fetches nothing (a license comment, an
XML namespace, a documentation link inside a bundle) does not count.
"""

import re
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from apps.accounts.services import api_key_create
from contextos.assets import REDOC_LOCAL_LOGO, REDOC_REMOTE_LOGO
from tests.factories import InteractionFactory, TaskFactory

pytestmark = pytest.mark.django_db

FAVICON = "contextos/favicon.svg"
ABSOLUTE = r"(?:https?:)?//[^\s\"'`()<>\\]+"
CSS_FETCHES = [
    re.compile(rf"url\(\s*[\"']?\s*({ABSOLUTE})", re.I),
    re.compile(rf"@import\s+[\"']\s*({ABSOLUTE})", re.I),
]
JS_FETCHES = [
    *CSS_FETCHES,  # CSS carried in strings (styled-components, injected <style>)
    re.compile(rf"\bsrc\s*[:=]\s*[\"'`]({ABSOLUTE})"),
    re.compile(rf"\b(?:fetch|import|importScripts)\(\s*[\"'`]({ABSOLUTE})"),
]
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
XML_NAMESPACE = re.compile(r"^xmlns(:|$)")


class Page(HTMLParser):
    """What a browser would fetch or navigate to from one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self.scripts: list[str] = []
        self.assets: list[str] = []
        self.icons: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            if name == "style":
                self.styles.append(value)
            elif not XML_NAMESPACE.match(name):
                self.attributes.append((tag, name, value))
        rel = values.get("rel", "").lower().split()
        if tag == "script" and values.get("src"):
            self.assets.append(values["src"])
        elif tag == "link" and "stylesheet" in rel and values.get("href"):
            self.assets.append(values["href"])
        elif tag == "link" and "icon" in rel:
            self.icons.append(values.get("href", ""))
        self._inside = tag if tag in {"script", "style"} else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside == "style":
            self.styles.append(data)
        elif self._inside == "script":
            self.scripts.append(data)


def _foreign(url: str, host: str) -> bool:
    return (urlsplit(url).hostname or host) != host


def _fetched(text: str, patterns: list[re.Pattern]) -> list[str]:
    return [match.group(1) for pattern in patterns for match in pattern.finditer(text)]


def _css_fetches(css: str) -> list[str]:
    return _fetched(CSS_COMMENT.sub("", css), CSS_FETCHES)


def references_to_other_hosts(html: str, host: str) -> list[str]:
    """Each reference in ``html`` to a host other than ``host``, as ``where: url``."""
    page = Page()
    page.feed(html)
    found = []
    for tag, name, value in page.attributes:
        urls = re.findall(ABSOLUTE, value) if "//" in value else []
        found += [f"<{tag} {name}>: {url}" for url in urls if _foreign(url, host)]
    for css in page.styles:
        found += [f"inline style: {url}" for url in _css_fetches(css) if _foreign(url, host)]
    for script in page.scripts:
        fetched = _fetched(script, JS_FETCHES)
        found += [f"inline script: {url}" for url in fetched if _foreign(url, host)]
    return found


@cache
def _local_text(client: Client, path: str) -> str:
    """A stylesheet or script of this host: from the static finders, or from its view."""
    if path.startswith(settings.STATIC_URL):
        found = finders.find(path.removeprefix(settings.STATIC_URL))
        assert found, f"{path} is linked but is no static file"
        return Path(found).read_text(encoding="utf-8", errors="replace")
    response = client.get(path)
    assert response.status_code == 200, path
    return b"".join(response).decode("utf-8", errors="replace")


def assets_referencing_other_hosts(client: Client, page_url: str, html: str) -> list[str]:
    """Each fetch from another host in the local stylesheets and scripts ``html`` loads."""
    page = Page()
    page.feed(html)
    host = urlsplit(page_url).hostname
    found = []
    pending = [urljoin(page_url, asset) for asset in page.assets]
    seen = set()
    while pending:
        url = pending.pop()
        if url in seen or _foreign(url, host):
            continue  # another host is already reported as the page's own reference
        seen.add(url)
        path = urlsplit(url).path
        text = _local_text(client, path)
        if path.endswith(".css"):
            fetched = _css_fetches(text)
            # Local @imports are stylesheets of their own.
            pending += [
                urljoin(url, imported)
                for imported in re.findall(r"@import\s+(?:url\()?\s*[\"']?([^\"')\s]+)", text)
                if not _foreign(urljoin(url, imported), host)
            ]
        else:
            fetched = _fetched(text, JS_FETCHES)
        found += [f"{path}: {other}" for other in fetched if _foreign(urljoin(url, other), host)]
    return found


def assert_loads_nothing_from_another_host(client: Client, url: str) -> Page:
    response = client.get(url)
    assert response.status_code == 200, url
    html = response.content.decode()
    page_url = response.wsgi_request.build_absolute_uri()
    host = urlsplit(page_url).hostname
    assert references_to_other_hosts(html, host) == [], url
    assert assets_referencing_other_hosts(client, page_url, html) == [], url
    page = Page()
    page.feed(html)
    return page


# --- The scanner itself: what counts as a reference, and what does not --------


@pytest.mark.parametrize(
    "html",
    [
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Roboto">',
        '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>',
        '<script src="//cdn.jsdelivr.net/npm/redoc@latest/bundles/redoc.standalone.js"></script>',
        '<img alt="" src="https://cdn.redoc.ly/redoc/logo-mini.svg">',
        '<img alt="" srcset="/static/a.png 1x, https://img.example.org/a@2x.png 2x">',
        '<a href="https://example.org/docs">docs</a>',
        "<style>@import 'https://fonts.googleapis.com/css?family=Montserrat';</style>",
        '<div style="background: url(https://img.example.org/bg.png)"></div>',
        '<script>fetch("https://telemetry.example.org/hit")</script>',
    ],
)
def test_the_scanner_finds_references_to_other_hosts(html):
    assert references_to_other_hosts(html, "testserver") != []


@pytest.mark.parametrize(
    "html",
    [
        '<link rel="icon" href="/static/contextos/favicon.svg">',
        '<a href="http://testserver/admin/">same host</a>',
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"></svg>',
        "<p>Costs are billed by https://api.openai.example (shown, not fetched).</p>",
        "<script>/* see https://github.com/example/project/LICENSE */ const a = 1;</script>",
    ],
)
def test_the_scanner_ignores_what_fetches_nothing_from_another_host(html):
    assert references_to_other_hosts(html, "testserver") == []


def test_the_scanner_reads_what_bundles_and_stylesheets_fetch():
    bundle = (
        '/*! license: https://github.com/example/LICENSE */ n.createElement("img",'
        '{alt:"logo",src:"https://cdn.example.org/logo.svg"}); a={href:"https://example.org/"};'
        'const css="@font-face{src:url(https://fonts.gstatic.com/x.woff2)}";'
    )
    assert _fetched(bundle, JS_FETCHES) == [
        "https://fonts.gstatic.com/x.woff2",
        "https://cdn.example.org/logo.svg",
    ]
    stylesheet = (
        "/* https://example.org/license */ a{background:url(../img/x.svg)}"
        " @import url(//x.example.org/y.css);"
    )
    assert _css_fetches(stylesheet) == ["//x.example.org/y.css"]


# --- The pages ----------------------------------------------------------------


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_nothing_from_another_host(client, page):
    assert assert_loads_nothing_from_another_host(client, page).icons != []


def test_admin_login_loads_nothing_from_another_host(client):
    page = assert_loads_nothing_from_another_host(client, reverse("admin:login"))
    assert page.icons == [f"{settings.STATIC_URL}{FAVICON}"]


def test_admin_pages_load_nothing_from_another_host(admin_client, admin_user, user):
    key, _ = api_key_create(user=user, name="offline pages")
    task = TaskFactory(owner=user)
    interaction = InteractionFactory(owner=user, task=task)
    pages = [reverse("admin:index")]
    pages += [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
    ]
    for row in (key, task, interaction, admin_user):
        meta = row._meta
        pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk]))
    for url in pages:
        page = assert_loads_nothing_from_another_host(admin_client, url)
        assert page.icons == [f"{settings.STATIC_URL}{FAVICON}"], url


# --- The assets those pages need, served here ---------------------------------


def test_redoc_bundle_is_served_here_with_a_local_logo(client):
    response = client.get(reverse("redoc-bundle"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    bundle = b"".join(response).decode()
    assert REDOC_REMOTE_LOGO not in bundle
    assert f'src:"{settings.STATIC_URL}{REDOC_LOCAL_LOGO}"' in bundle
    assert finders.find(REDOC_LOCAL_LOGO)
    map_url = re.findall(r"^//# sourceMappingURL=(\S+)$", bundle, re.M)[-1]
    assert finders.find(map_url.removeprefix(settings.STATIC_URL))
    revalidated = client.get(reverse("redoc-bundle"), HTTP_IF_NONE_MATCH=response["ETag"])
    assert revalidated.status_code == 304


def test_favicon_ico_leads_to_the_favicon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 302
    assert response["Location"] == f"{settings.STATIC_URL}{FAVICON}"
    assert finders.find(FAVICON)
