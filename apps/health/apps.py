from django.apps import AppConfig


class HealthConfig(AppConfig):
    name = "apps.health"
    verbose_name = "Health"

    def ready(self) -> None:
        from celery.signals import beat_init

        from apps.health.metrics import CeleryCollector
        from apps.health.tasks import send_heartbeat_on_beat_start
        from contextos import metrics

        metrics.register(CeleryCollector())
        beat_init.connect(send_heartbeat_on_beat_start, dispatch_uid="health.heartbeat_on_start")
