"""The Anthropic-compatible Messages API (``POST /v1/messages``) of the gateway."""
