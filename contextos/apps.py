from django.apps import AppConfig


class ContextosConfig(AppConfig):
    name = "contextos"
    verbose_name = "ContextOS kernel"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from contextos import logging as kernel_logging
        from contextos import schema  # noqa: F401  (registers the schema extension)
        from contextos.middleware import clear_request_id
        from contextos.worker import connect_worker_signals

        kernel_logging.connect_celery_signals()
        connect_worker_signals()
        request_finished.connect(clear_request_id, dispatch_uid="contextos.clear_request_id")
