"""Production: secure by default; loosened only by explicit environment variables.

SECRET_KEY and ALLOWED_HOSTS have no defaults here: a missing one stops the
process at start-up instead of running insecurely.
"""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import LOGGING, env, log_format

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY")
# Sessions, password resets and signed values are only as safe as this key:
# refuse the placeholder of .env.example and anything short enough to guess.
if SECRET_KEY.startswith("change-me") or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "SECRET_KEY is a placeholder or shorter than 50 characters. Set it to a random "
        "value, made for instance with: "
        'python -c "import secrets; print(secrets.token_urlsafe(50))"'
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

# TLS is terminated in front of the app more often than not; the proxy says so.
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Load balancers probe health, and Prometheus scrapes metrics, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health/(live|ready)$", r"^metrics$"]
# Route patterns, error counts, queue depths and workers are not for everyone: /metrics
# needs METRICS_TOKEN, unless METRICS_PUBLIC=true opens it (a private network).
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

LOG_FORMAT = log_format("json")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
