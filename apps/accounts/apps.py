from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    verbose_name = "Accounts and API keys"

    def ready(self) -> None:
        # ``schema`` registers the Bearer API key security scheme with drf-spectacular;
        # the key cache drops its copies when keys or users change; admin login
        # lockouts and their lifting go to the audit log.
        from apps.accounts import key_cache, lockout, schema  # noqa: F401

        key_cache.connect_signals()
        lockout.connect_signals()
