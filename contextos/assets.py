"""Browser assets served outside /static/: the favicon at its conventional path,
and Redoc's bundle with its one reference to another host pointed at a local file.
"""

import hashlib
from functools import cache
from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.templatetags.static import static
from django.utils.cache import patch_cache_control
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import condition, require_safe

FAVICON = "contextos/favicon.svg"
REDOC_BUNDLE = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
# Redoc's sidebar footer always shows a logo fetched from Redocly's CDN (no
# option turns it off), which fails offline and leaks every visit to that host.
REDOC_REMOTE_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_LOCAL_LOGO = "contextos/redoc-credit.svg"
# The bundle names its source map relative to itself, which is /static/ only
# when served from there.
REDOC_SOURCE_MAP = "//# sourceMappingURL=redoc.standalone.js.map"
ONE_DAY = 24 * 3600


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on pages that name no icon (JSON, /metrics)."""
    response = HttpResponseRedirect(static(FAVICON))
    patch_cache_control(response, public=True, max_age=ONE_DAY)
    return response


@cache
def _redoc_bundle() -> tuple[bytes, str]:
    """The bundle's bytes with local URLs in place of remote ones, and their ETag."""
    source = Path(finders.find(REDOC_BUNDLE)).read_text(encoding="utf-8")
    local = source.replace(REDOC_REMOTE_LOGO, static(REDOC_LOCAL_LOGO)).replace(
        REDOC_SOURCE_MAP, f"//# sourceMappingURL={static(REDOC_BUNDLE + '.map')}"
    )
    body = local.encode()
    return body, hashlib.sha256(body).hexdigest()[:32]


@gzip_page
@require_safe
@condition(etag_func=lambda request: _redoc_bundle()[1])
def redoc_bundle(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(_redoc_bundle()[0], content_type="text/javascript; charset=utf-8")
    patch_cache_control(response, public=True, max_age=ONE_DAY)
    return response
