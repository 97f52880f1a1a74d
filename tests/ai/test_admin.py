"""Staff inspect AI interactions in the admin: filters, search, readable detail, retry, CSV."""

import csv
import io

import pytest

from apps.ai_interactions.models import AIInteraction
from apps.ai_interactions.services import interaction_create

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/ai_interactions/aiinteraction/"


@pytest.fixture
def interaction(user):
    return interaction_create(
        owner=user,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "What is <b>bold</b>?"},
        ],
    )


def test_changelist_filters_and_searches(admin_client, interaction, user):
    for query in [
        "",
        "?status__exact=succeeded",
        "?model=echo-1",
        "?provider=echo",
        "?cached__exact=0",
        f"?q={user.username}",
        f"?q={interaction.pk}",
        f"?q={interaction.prompt_hash}",
    ]:
        page = admin_client.get(CHANGELIST + query)
        assert page.status_code == 200, query
        assert f"{interaction.pk}/change/" in page.content.decode(), query
    for query in ["?status__exact=failed", "?q=nobody-by-that-name"]:
        assert (
            f"{interaction.pk}/change/" not in admin_client.get(CHANGELIST + query).content.decode()
        )


def test_detail_shows_the_conversation_escaped(admin_client, interaction):
    page = admin_client.get(f"{CHANGELIST}{interaction.pk}/change/").content.decode()
    assert "<strong>system</strong>" in page
    assert "Be terse." in page
    assert "What is &lt;b&gt;bold&lt;/b&gt;?" in page  # shown, never rendered as HTML
    assert "Echo: What is &lt;b&gt;bold&lt;/b&gt;?" in page


def test_export_csv(admin_client, interaction):
    response = admin_client.post(
        CHANGELIST, {"action": "export_csv", "_selected_action": [interaction.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["id", "created_at", "owner_id"]
    assert rows[1][0] == str(interaction.pk)
    assert len(rows) == 2


def test_retry_action_reruns_failed_interactions(admin_client, interaction):
    AIInteraction.objects.filter(pk=interaction.pk).update(
        status="failed", error={"message": "x", "type": "server_error", "provider_status": 500}
    )
    admin_client.post(
        CHANGELIST, {"action": "retry_interactions", "_selected_action": [interaction.pk]}
    )
    interaction.refresh_from_db()
    assert interaction.status == "succeeded"
