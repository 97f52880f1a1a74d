from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "apps.routing"
    verbose_name = "Routing: providers, routes and deployments"

    def ready(self) -> None:
        # Any change to the routing rows (admin, sync_models, a shell) reloads the
        # routing table in every process.
        from apps.routing import table

        table.connect_signals()
