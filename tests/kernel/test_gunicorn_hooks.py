"""The web server's worker hooks (``config/gunicorn.py``)."""

import gc

from config import gunicorn


def test_a_worker_leaves_what_the_loaded_app_holds_out_of_the_collectors_passes():
    gc.unfreeze()
    try:
        gunicorn.post_worker_init(worker=None)
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    # Every module, setting, URL and view loaded by then: far more than a few objects.
    assert frozen > 100_000
