from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "apps.governance"
    verbose_name = "Governance: limits, budgets and the audit log"

    def ready(self) -> None:
        # A change of limits (admin, commands, the keys API) reaches every process.
        from apps.governance import limits

        limits.connect_signals()
