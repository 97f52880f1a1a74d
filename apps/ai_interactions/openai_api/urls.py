from django.urls import path

from apps.ai_interactions.openai_api import views

urlpatterns = [
    path("chat/completions", views.ChatCompletionsView.as_view(), name="openai-chat"),
    path("embeddings", views.EmbeddingsView.as_view(), name="openai-embeddings"),
    path("models", views.ModelsView.as_view(), name="openai-models"),
]
