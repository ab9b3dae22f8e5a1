"""Errors of the evaluation harness (printed by the CLI without a stack trace)."""

from __future__ import annotations

from core.errors import Insid3Error


class DatasetNotFoundError(Insid3Error):
    """A dataset folder or file that the expected layout requires is missing."""

    code = "dataset_not_found"


class DatasetFormatError(Insid3Error):
    """Dataset files that exist but do not have the expected content."""

    code = "dataset_format"


class ResumeError(Insid3Error):
    """An output directory whose saved run cannot be continued (or would be overwritten)."""

    code = "resume_error"
