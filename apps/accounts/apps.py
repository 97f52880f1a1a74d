from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    verbose_name = "Accounts and API keys"

    def ready(self) -> None:
        # Registers the Bearer API key security scheme with drf-spectacular.
        from apps.accounts import schema  # noqa: F401
