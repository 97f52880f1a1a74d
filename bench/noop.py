"""A plain Celery app with a no-op task and no result backend: the throughput baseline."""

import os

from celery import Celery

app = Celery("bench_noop", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    return None
