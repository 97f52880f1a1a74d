from django.apps import AppConfig


class AIInteractionsConfig(AppConfig):
    name = "apps.ai_interactions"
    label = "ai_interactions"
    verbose_name = "AI interactions"
