"""`manage.py ai_cache`: count and clear cached answers by SCAN, optionally by model."""

import io

import pytest
from django.core.cache import cache
from django.core.management import call_command

from apps.ai_interactions.answer_cache import response_cache_key
from apps.ai_interactions.services import interaction_create

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("ai_cache", *args, stdout=out)
    return out.getvalue()


def test_stats_and_clear_by_model(user):
    cached = [
        interaction_create(owner=user, messages=[{"role": "user", "content": text}])
        for text in ("first question", "second question")
    ]
    cache.set("unrelated:key", "stays", timeout=60)
    stats = run("stats")
    assert stats.startswith("2 cached answers (all models), ")
    assert int(stats.split(", ")[1].split(" bytes")[0].replace(",", "")) > 0

    assert run("clear", "--model", "some-other-model").startswith("Removed 0 ")
    assert run("stats", "--model", "echo-1").startswith("2 cached answers (model echo-1)")
    assert run("clear", "--model", "echo-1").startswith("Removed 2 ")
    assert run("stats").startswith("0 cached answers")
    for interaction in cached:
        assert cache.get(response_cache_key(interaction.prompt_hash)) is None
    assert cache.get("unrelated:key") == "stays"
