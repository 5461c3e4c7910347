"""Module-level sweep tasks for tests: executors import a task by name in their worker processes."""

from __future__ import annotations

import os
from pathlib import Path

from fnodiag.config import RunConfig
from fnodiag.runs import RunDir


def die_while_running(spec: dict, *, callbacks=()) -> dict:
    """Start the run (status ``running``), then end the process without a word, as a killed worker does."""
    run = RunDir.create(Path(spec["out"]) / spec["name"], RunConfig.from_dict(spec["config"]), exist_ok=True)
    run.write_status("running", step=3, epoch=1)
    os._exit(9)
