from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.ai_interactions import views

app_name = "ai"

router = SimpleRouter()
router.register("interactions", views.InteractionViewSet, basename="interaction")

urlpatterns = [
    path("models/", views.ModelListView.as_view(), name="models"),
    path("usage/", views.UsageView.as_view(), name="usage"),
    *router.urls,
]
