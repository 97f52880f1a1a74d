"""ContextOS shared kernel: base models, errors, request context, logging and API defaults."""

__version__ = "0.1.0"
