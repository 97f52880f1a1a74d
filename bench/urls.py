from django.urls import path

from bench import views
from config.urls import handler400, handler403, handler404, handler500
from config.urls import urlpatterns as project

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]

urlpatterns = [
    path("bench/bare", views.BareView.as_view()),
    path("bench/bare-insert", views.BareInsertView.as_view()),
    path("bench/bare-row/<uuid:pk>", views.BareRowView.as_view()),
    path("bench/bare-cache-insert", views.BareCacheInsertView.as_view()),
    path("bench/bare-proxy", views.BareProxyView.as_view()),
    *project,
]
