from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "apps.tasks"
    verbose_name = "Background tasks"

    def ready(self) -> None:
        from apps.tasks import registry

        registry.autodiscover()
