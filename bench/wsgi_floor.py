"""The server's own floor: a WSGI app with no Django that forwards each POST to the
benchmark's upstream (``BENCH_UPSTREAM_URL`` joined with the request's path) and answers
its body, on the same gunicorn worker as the web process (``bench.run.server_floor``).
What gunicorn, a second hop on loopback and a Python process woken by each of them add
to a call, before any of ContextOS's code or Django's runs."""

import functools
import os

from urllib3.connectionpool import HTTPConnectionPool, connection_from_url
from urllib3.util import parse_url


@functools.cache
def upstream() -> tuple[HTTPConnectionPool, str]:
    """The benchmark's upstream: its own pool, made in the worker process (after the fork)
    as the gateway's provider keeps it, and its URL's path (the bench's forwarding views
    share it)."""
    url = os.environ["BENCH_UPSTREAM_URL"]
    return connection_from_url(url, maxsize=32), (parse_url(url).path or "").rstrip("/")


def application(environ: dict, start_response) -> list[bytes]:
    if environ["REQUEST_METHOD"] != "POST":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    pool, prefix = upstream()
    answer = pool.urlopen(
        "POST",
        prefix + environ["PATH_INFO"],
        body=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
    )
    start_response(
        f"{answer.status} {answer.reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(answer.data)))],
    )
    return [answer.data]
