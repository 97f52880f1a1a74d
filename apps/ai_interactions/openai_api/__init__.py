"""The OpenAI-compatible adapter: `/v1/chat/completions` and `/v1/models` over the AI services."""
