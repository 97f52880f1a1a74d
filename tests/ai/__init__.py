"""Tests of the AI providers and the retry policy around them."""
