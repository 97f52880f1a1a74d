"""``manage.py sync_models``: the routing tables made to match a file, idempotently, with
keys only ever read from the environment and never printed."""

import io
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, ManagementUtility, call_command

from apps.routing.models import Deployment, Provider, Route

pytestmark = pytest.mark.django_db

MAIN_KEY = "sk-main-secret-value-7d1f"
CLAUDE_KEY = "sk-ant-secret-value-a9c3"

SPEC_FILE = """
providers:
  - {name: main, kind: openai, base_url: "http://127.0.0.1:8001/v1",
     api_key: os.environ/MAIN_KEY, timeout: 30, max_attempts: 2}
  - {name: claude, kind: anthropic, base_url: "https://api.anthropic.com",
     api_key: os.environ/CLAUDE_KEY}
routes:
  - name: gpt-4o
    strategy: weighted            # priority | weighted | latency
    fallbacks: [claude-sonnet]
    deployments:
      - {provider: main, model: gpt-4o-2024-08-06, weight: 2, priority: 1,
         input_price_per_mtok: "2.50", output_price_per_mtok: "10.00",
         context_window: 128000, rpm: 1000, tpm: 100000}
  - name: claude-sonnet
    deployments:
      - {provider: claude, model: claude-sonnet-4-5, context_window: 200000}
"""


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("MAIN_KEY", MAIN_KEY)
    monkeypatch.setenv("CLAUDE_KEY", CLAUDE_KEY)


@pytest.fixture
def models_file(tmp_path):
    """Write a models file and return its path."""

    def write(text: str, name: str = "models.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def sync(path: str, *options: str) -> str:
    out = io.StringIO()
    call_command("sync_models", path, *options, stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    """Every routing row and when it was last written."""
    return {
        (model.__name__, row.pk): row.updated_at
        for model in (Provider, Route, Deployment)
        for row in model.objects.all()
    }


def edited(text: str, **changes: object) -> str:
    """The spec file with a field of gpt-4o's deployment changed (or routes dropped)."""
    document = yaml.safe_load(text)
    deployment = document["routes"][0]["deployments"][0]
    deployment.update(changes)
    return yaml.safe_dump(document)


def test_the_spec_file_creates_every_row_and_a_second_run_changes_nothing(
    keys, models_file, settings
):
    path = models_file(SPEC_FILE)
    first = sync(path)
    assert first.splitlines() == [
        "Created provider main",
        "Created provider claude",
        "Created route gpt-4o",
        "Created route claude-sonnet",
        "Created deployment gpt-4o: main/gpt-4o-2024-08-06",
        "Created deployment claude-sonnet: claude/claude-sonnet-4-5",
    ]
    main = Provider.objects.get(name="main")
    assert (main.kind, main.base_url, main.timeout, main.max_attempts) == (
        "openai",
        "http://127.0.0.1:8001/v1",
        30.0,
        2,
    )
    assert main.api_key == MAIN_KEY
    assert main.api_key_last_four == "…7d1f"
    assert MAIN_KEY not in main.api_key_encrypted
    route = Route.objects.get(name="gpt-4o")
    assert (route.strategy, route.fallbacks) == ("weighted", ["claude-sonnet"])
    deployment = route.deployments.get()
    assert deployment.label == "main/gpt-4o-2024-08-06"
    assert (deployment.weight, deployment.priority) == (2, 1)
    assert deployment.input_price_per_mtok == Decimal("2.50")
    assert deployment.output_price_per_mtok == Decimal("10.00")
    assert (deployment.context_window, deployment.rpm, deployment.tpm) == (128000, 1000, 100000)
    # Fields left out take their defaults.
    sonnet = Deployment.objects.get(route__name="claude-sonnet")
    assert (sonnet.weight, sonnet.priority, sonnet.rpm, sonnet.enabled) == (1, 0, None, True)
    assert Route.objects.get(name="claude-sonnet").strategy == "priority"
    # The built-in echo models stay.
    assert {"echo-1", "echo-embed-1"} <= set(Route.objects.values_list("name", flat=True))

    before = snapshot()
    assert sync(path) == "No changes.\n"
    assert snapshot() == before


def test_clients_see_the_synced_routes(keys, models_file, api_client):
    sync(models_file(SPEC_FILE))
    listed = {model["id"] for model in api_client.get("/v1/models").json()["data"]}
    assert {"gpt-4o", "claude-sonnet", "echo-1", "echo-embed-1"} <= listed


def test_changes_are_printed_field_by_field_and_a_new_key_only_as_changed(
    keys, models_file, monkeypatch
):
    sync(models_file(SPEC_FILE))
    new_key = "sk-main-rotated-value-42aa"
    monkeypatch.setenv("MAIN_KEY", new_key)
    output = sync(models_file(edited(SPEC_FILE, weight=3, input_price_per_mtok="2.00")))
    assert output.splitlines() == [
        "Changed provider main (api key changed)",
        "Changed deployment gpt-4o: main/gpt-4o-2024-08-06 "
        "(weight 2 -> 3, input_price_per_mtok 2.5 -> 2)",
    ]
    assert MAIN_KEY not in output
    assert new_key not in output
    main = Provider.objects.get(name="main")
    assert main.api_key == new_key
    assert main.api_key_last_four == "…42aa"
    assert Deployment.objects.get(route__name="gpt-4o").weight == 3


def test_dry_run_prints_the_same_lines_and_writes_nothing(keys, models_file):
    path = models_file(SPEC_FILE)
    output = sync(path, "--dry-run")
    assert "Created provider main" in output
    assert "Created deployment gpt-4o: main/gpt-4o-2024-08-06" in output
    assert "nothing was written" in output
    # Not even the built-in rows an empty database gets on the first sync.
    assert not Provider.objects.exists()
    assert not Route.objects.exists()

    sync(path)
    before = snapshot()
    changed = models_file(edited(SPEC_FILE, weight=5), "changed.yaml")
    output = sync(changed, "--dry-run")
    assert "Changed deployment gpt-4o: main/gpt-4o-2024-08-06 (weight 2 -> 5)" in output
    assert snapshot() == before
    assert Deployment.objects.get(route__name="gpt-4o").weight == 2
    # A dry run with nothing to do says so.
    assert sync(path, "--dry-run").splitlines()[0] == "No changes."


def test_prune_removes_what_the_file_lacks_and_only_with_prune(keys, models_file, api_client):
    sync(models_file(SPEC_FILE))
    document = yaml.safe_load(SPEC_FILE)
    document["providers"] = document["providers"][:1]  # main only
    document["routes"] = document["routes"][:1]  # gpt-4o only
    del document["routes"][0]["fallbacks"]
    smaller = models_file(yaml.safe_dump(document), "smaller.yaml")

    # Without --prune, nothing is removed (only the dropped fallback changes).
    assert sync(smaller).splitlines() == [
        'Changed route gpt-4o (fallbacks ["claude-sonnet"] -> [])'
    ]
    assert Provider.objects.filter(name__in=["claude", "echo"]).count() == 2

    output = sync(smaller, "--prune")
    assert output.splitlines() == [
        "Removed deployment claude-sonnet: claude/claude-sonnet-4-5",
        "Removed deployment echo-1: echo/echo-1",
        "Removed deployment echo-embed-1: echo/echo-embed-1",
        "Removed route claude-sonnet",
        "Removed route echo-1",
        "Removed route echo-embed-1",
        "Removed provider claude",
        "Removed provider echo",
    ]
    assert list(Route.objects.values_list("name", flat=True)) == ["gpt-4o"]
    assert list(Provider.objects.values_list("name", flat=True)) == ["main"]
    listed = {model["id"] for model in api_client.get("/v1/models").json()["data"]}
    assert listed == {"gpt-4o"}
    assert sync(smaller, "--prune") == "No changes.\n"


def test_prune_keeps_the_echo_models_a_file_lists(keys, models_file):
    document = yaml.safe_load(SPEC_FILE)
    document["providers"].append({"name": "echo", "kind": "echo"})
    document["routes"] += [
        {"name": name, "deployments": [{"provider": "echo", "model": name}]}
        for name in ("echo-1", "echo-embed-1")
    ]
    output = sync(models_file(yaml.safe_dump(document)), "--prune")
    assert "Removed" not in output
    assert {"echo-1", "echo-embed-1", "gpt-4o"} <= set(Route.objects.values_list("name", flat=True))


def test_a_literal_key_is_refused_with_exit_1_without_echoing_it(models_file, capsys, monkeypatch):
    # As manage.py runs it; its closing of the connections would end the test's transaction.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    literal = "sk-proj-LiteralKeyInTheFile0123"
    path = models_file(
        f"providers:\n  - {{name: main, kind: openai, api_key: {literal}}}\nroutes: []\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        ManagementUtility(["manage.py", "sync_models", path]).execute()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "os.environ/NAME" in captured.err
    assert literal not in captured.out + captured.err
    assert not Provider.objects.exists()
    assert not Route.objects.exists()


@pytest.mark.parametrize(
    "api_key",
    [
        "os.environ/sk-proj-LiteralKeyInTheFile0123",  # not a variable name
        "sk-proj-LiteralKeyInTheFile0123 os.environ/MAIN_KEY",
    ],
)
def test_anything_but_a_reference_is_a_literal(keys, models_file, api_key):
    path = models_file(f'providers:\n  - {{name: main, kind: openai, api_key: "{api_key}"}}\n')
    with pytest.raises(CommandError) as error:
        sync(path)
    assert "LiteralKeyInTheFile0123" not in str(error.value)
    assert not Provider.objects.filter(name="main").exists()


def test_a_key_in_a_file_that_is_not_valid_yaml_is_not_echoed(models_file):
    literal = "sk-proj-BrokenYamlKey4567"
    path = models_file(f"providers:\n  - {{name: main, api_key: {literal}: oops}}\n")
    with pytest.raises(CommandError, match="line 2") as error:
        sync(path)
    assert literal not in str(error.value)


def test_a_reference_to_an_unset_variable_is_an_error(models_file, monkeypatch):
    monkeypatch.delenv("MAIN_KEY", raising=False)
    monkeypatch.setenv("CLAUDE_KEY", CLAUDE_KEY)
    with pytest.raises(CommandError, match="MAIN_KEY is not set"):
        sync(models_file(SPEC_FILE))
    assert not Provider.objects.exists()


def test_changes_on_a_sync_that_fails_are_all_rolled_back(keys, models_file):
    sync(models_file(SPEC_FILE))
    before = snapshot()
    broken = yaml.safe_load(edited(SPEC_FILE, weight=9))
    broken["routes"][1]["deployments"][0]["provider"] = "nobody"
    with pytest.raises(CommandError, match="unknown provider 'nobody'"):
        sync(models_file(yaml.safe_dump(broken), "broken.yaml"))
    assert snapshot() == before
    assert Deployment.objects.get(route__name="gpt-4o").weight == 2


def test_every_problem_of_a_file_is_named(keys, models_file):
    path = models_file(
        """
providers:
  - {name: main, kind: openai, api_key: os.environ/MAIN_KEY, colour: blue}
  - {name: odd, kind: mistral}
routes:
  - name: gpt-4o
    strategy: fastest
    fallbacks: [nowhere]
    deployments:
      - {provider: ghost, model: gpt-4o, weight: 0}
      - {provider: main, model: gpt-4o, price: 3}
extras: true
"""
    )
    with pytest.raises(CommandError) as error:
        sync(path)
    message = str(error.value)
    for problem in (
        "the file: unknown key extras",
        "provider main: unknown key colour",
        "provider odd: 'kind' must be one of openai, anthropic, echo",
        "route gpt-4o: 'strategy' must be one of priority, weighted, latency",
        "route gpt-4o deployments[0]: 'weight' must be a whole number, 1 or more",
        "route gpt-4o deployments[1]: unknown key price",
    ):
        assert problem in message
    assert "nothing written" in message
    assert not Provider.objects.filter(name="main").exists()


def test_unknown_providers_and_fallback_routes_are_named(keys, models_file):
    path = models_file(
        """
providers:
  - {name: main, kind: openai, api_key: os.environ/MAIN_KEY}
routes:
  - name: gpt-4o
    fallbacks: [nowhere]
    deployments:
      - {provider: ghost, model: gpt-4o}
"""
    )
    with pytest.raises(CommandError) as error:
        sync(path)
    message = str(error.value)
    assert "route gpt-4o: fallback 'nowhere' is not a known route" in message
    assert "route gpt-4o: deployment 'gpt-4o' names an unknown provider 'ghost'" in message
    assert not Route.objects.filter(name="gpt-4o").exists()


def test_without_prune_a_file_may_use_the_rows_it_keeps(keys, models_file):
    # echo (built in) and the echo-1 route are kept, so the file may name them.
    path = models_file(
        """
routes:
  - name: fast
    fallbacks: [echo-1]
    deployments:
      - {provider: echo, model: echo-1}
"""
    )
    assert sync(path).splitlines() == ["Created route fast", "Created deployment fast: echo/echo-1"]
    # With --prune the file must list them itself.
    with pytest.raises(CommandError, match="unknown provider 'echo'"):
        sync(path, "--prune")
    assert Route.objects.filter(name="echo-1").exists()


def test_the_example_file_in_the_docs_syncs(models_file, monkeypatch):
    monkeypatch.setenv("MAIN_KEY", MAIN_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CLAUDE_KEY)
    example = Path(__file__).resolve().parents[2] / "docs" / "models.example.yaml"
    output = sync(str(example))
    assert "Created route gpt-4o" in output
    assert sync(str(example)) == "No changes.\n"
