from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.tasks import views

app_name = "tasks"

router = SimpleRouter()
router.register("", views.TaskViewSet, basename="task")

urlpatterns = [
    path("types/", views.TaskTypeListView.as_view(), name="types"),
    *router.urls,
]
