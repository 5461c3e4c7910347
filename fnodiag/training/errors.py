"""Errors of a training run that are not bad input (no Lightning import: the CLI catches them cheaply)."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training (or the evaluation after it) raised: an internal failure, not bad input.

    The run's ``status.json`` says ``failed`` with the traceback in its message, and the
    traceback is appended to ``<run>/train.log``; :attr:`run` is the run directory. The CLI
    reports it in one line and exits with status 1.
    """

    def __init__(self, message: str, run=None):
        super().__init__(message)
        self.run = run
