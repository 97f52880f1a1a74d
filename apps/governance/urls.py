from rest_framework.routers import SimpleRouter

from apps.governance import views

app_name = "keys"

router = SimpleRouter()
router.register("", views.KeyViewSet, basename="key")

urlpatterns = router.urls
