"""Reading ``/metrics`` the way Prometheus does."""

from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0 when it is not there yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client, **headers: str) -> dict[tuple[str, frozenset], float]:
    """GET /metrics through a Django test client and parse it."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:500]
    return parse(response.content.decode())
