"""A full-text index over prompt and response (PostgreSQL), so search does not scan the table."""

from django.db import migrations

INDEX = "ai_interaction_search"
EXPRESSION = "to_tsvector('simple', coalesce(prompt, '') || ' ' || coalesce(response, ''))"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON ai_interactions_aiinteraction "
            f"USING gin (({EXPRESSION}))"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("ai_interactions", "0001_initial")]

    operations = [migrations.RunPython(create_index, drop_index)]
