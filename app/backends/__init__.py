"""Implementations of ``app.backend.InferenceBackend`` that live in this package."""
