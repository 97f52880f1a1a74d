"""Resources of their own for each pytest-xdist worker (``-n``), loaded with ``-p tests.parallel``.

The suite runs in several worker processes at once (``-n 2`` in pyproject.toml). Each
worker needs what it flushes, purges or counts to be its own:

- PostgreSQL: pytest-django already gives each worker a test database of its own
  (``test_<name>_gw0``, ``test_<name>_gw1``, ...); the servers and workers a test
  starts are pointed at the test database by name (``tests/integration/conftest.py``).
- Redis: every test flushes the cache database (``tests/conftest.py``) and tests purge
  broker queues, so each worker gets Redis databases of its own, derived from
  ``REDIS_URL`` and ``CELERY_BROKER_URL`` (or the defaults of ``config.settings.test``):
  worker ``gwN`` uses each base database number plus ``N`` times the span of the bases
  (with 3 and 4: gw0 uses 3 and 4, gw1 uses 5 and 6). When that would pass Redis's last
  database (15), the numbers go down instead (with 14 and 15: gw1 uses 12 and 13).
- Celery queues: ``config.settings.test`` names the test queue after the process id,
  but xdist's workers inherit the name their controller chose; each worker adds its
  own id to it (``test-<pid>-gw0``), so that none consumes another's messages.
- Ports and temporary directories: chosen free (``free_port``) and per worker
  (``tmp_path``), as before.

It also schedules: the fault suite (``tests/chaos``: a 50-client load run, outages) runs
on one worker, its tests one after another, never two at once; and the longest other
tests start first, so that none starts near the end while the other worker idles. (The
``xdist_group`` mark of ``--dist loadgroup`` cannot do the first: pytest-xdist 3.8 renames
the node id through an attribute pytest 9 no longer reads, so the groups are ignored.)

This module is imported while pytest parses its options, before pytest-django loads the
Django settings (a conftest.py is imported too late): the environment it changes is what
the settings read, and what the subprocesses tests start inherit. Without xdist, or with
``-n 0``, it changes nothing.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import pytest

# Run on one worker, one after another (node id prefixes).
TOGETHER = ("tests/chaos/",)
# Started first (a minute or more each).
LONGEST_FIRST = ("tests/security/test_fuzz.py::", "tests/integration/test_make_run.py::")

# As config.settings.test, which applies them only when the variables are unset.
DEFAULT_URLS = {
    "REDIS_URL": "redis://127.0.0.1:6379/14",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/15",
}
# Redis's default number of databases (``databases 16``): numbers 0 to 15.
REDIS_DATABASES = 16


def worker_index() -> int | None:
    """0 for xdist's worker gw0, 1 for gw1, ...; None outside xdist workers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:])
    return None


def redis_database(url: str) -> int | None:
    """The database number of a redis:// URL (0 when it names none); None for other URLs."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        return None
    number = parts.path.strip("/")
    return int(number) if number.isdigit() else 0


def with_database(url: str, number: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{number}"))


def worker_urls(urls: dict[str, str], index: int, workers: int) -> dict[str, str]:
    """The Redis URLs of worker ``index`` of ``workers``: every database moved by ``index``
    times the span of the given ones, so that no two workers share a database."""
    bases = {name: redis_database(url) for name, url in urls.items()}
    bases = {name: number for name, number in bases.items() if number is not None}
    if not bases or index == 0:
        return dict(urls)
    low, high = min(bases.values()), max(bases.values())
    stride = high - low + 1
    step = stride if high + (workers - 1) * stride < REDIS_DATABASES else -stride
    if low + (workers - 1) * step < 0:
        raise RuntimeError(
            f"{workers} xdist workers need {workers * stride} Redis databases from "
            f"{sorted(set(bases.values()))}; run with fewer workers (-n) or other "
            "REDIS_URL / CELERY_BROKER_URL database numbers"
        )
    return {
        name: with_database(url, bases[name] + index * step) if name in bases else url
        for name, url in urls.items()
    }


def isolate_worker() -> None:
    index = worker_index()
    if index is None:
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", index + 1))
    urls = {name: os.environ.get(name) or default for name, default in DEFAULT_URLS.items()}
    # Only REDIS_URL set to "" means "no Redis" (the database cache); keep that.
    urls = {name: url for name, url in urls.items() if os.environ.get(name, None) != ""}
    os.environ.update(worker_urls(urls, index, max(workers, index + 1)))
    queue = os.environ.get("CONTEXTOS_TEST_QUEUE") or f"test-{os.getpid()}"
    os.environ["CONTEXTOS_TEST_QUEUE"] = f"{queue}-{os.environ['PYTEST_XDIST_WORKER']}"


isolate_worker()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker; every worker sorts alike
        items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Each test is a unit of work of its own, as with ``--dist load``, except the tests
    under ``TOGETHER``: one unit, sent first (the largest go first) to one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "together" if nodeid.startswith(TOGETHER) else nodeid

    return Scheduling(config, log)
