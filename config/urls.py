"""Root URLs: the versioned API, its schema and docs, metrics, and the admin."""

from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from contextos import assets, home
from contextos import views as kernel_views

admin.site.site_header = "ContextOS administration"
admin.site.site_title = "ContextOS admin"
admin.site.index_title = "Operations"
# Lists and detail pages take the whole width of a 1400 px screen; the app list is on
# the dashboard (the index) and in the breadcrumbs.
admin.site.enable_nav_sidebar = False

# Swagger UI and Redoc style their pages with inline styles; their scripts are files
# (the split view serves Swagger UI's start script from its own URL).
docs_styles = csp_update({"style-src": ["'unsafe-inline'"]})

urlpatterns = [
    path("", home.home, name="home"),
    path("api/v1/", home.APIRootView.as_view(), name="api-root"),
    path("api/v1/health/", include("apps.health.urls")),
    path("api/v1/tasks/", include("apps.tasks.urls")),
    path("api/v1/ai/", include("apps.ai_interactions.urls")),
    path("api/v1/keys/", include("apps.governance.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        docs_styles(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="swagger-ui",
    ),
    path("api/redoc/", docs_styles(SpectacularRedocView.as_view(url_name="schema")), name="redoc"),
    path("api/redoc/redoc.standalone.js", assets.redoc_bundle, name="redoc-bundle"),
    path("v1/", include("apps.ai_interactions.anthropic_api.urls")),
    path("v1/", include("apps.ai_interactions.openai_api.urls")),
    path("metrics", kernel_views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("favicon.ico", assets.favicon, name="favicon"),
    # Anything else under /api/ or /v1/ is a JSON 404, whatever DEBUG says.
    re_path(r"^(api|v1)/", kernel_views.api_not_found),
]

handler400 = "contextos.views.bad_request"
handler403 = "contextos.views.permission_denied"
handler404 = "contextos.views.page_not_found"
handler500 = "contextos.views.server_error"
