from django.urls import path

from apps.ai_interactions.openai_api import views

urlpatterns = [
    path("chat/completions", views.ChatCompletionsView.as_view(), name="openai-chat"),
    path("models", views.ModelsView.as_view(), name="openai-models"),
]
