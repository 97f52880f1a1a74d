"""Production settings plus the baseline views the benchmarks compare against."""

from config.settings.prod import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
