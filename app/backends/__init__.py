"""Implementations of ``core.serving.InferenceBackend`` that live in this package."""
