from django.urls import path

from apps.ai_interactions.anthropic_api import views

urlpatterns = [
    path("messages", views.MessagesView.as_view(), name="anthropic-messages"),
]
