"""Run directories and their SQLite store: the only reader/writer of run records.

A run directory (one per arm x seed) holds the files of the DESIGN.md contract; :class:`RunDir`
names them and writes every JSON file atomically (temporary file in the same folder, fsync,
``os.replace``), so a reader or a killed process never sees half a file. :class:`RunStore` appends
per-step scalars and per-layer statistics to ``run.sqlite`` (WAL mode) in buffered transactions;
:class:`StoreReader` tails it read-only from another process.

Modules: ``rundir`` (RunDir, list_runs, JSON files), ``liveness`` (heartbeat; a dead ``running`` run
reads as ``stopped``), ``store`` (schema and the writer), ``reader`` (the read-only tailing reader and its
record types).
"""

from fnodiag.files import atomic_write, atomic_write_text, jsonable
from fnodiag.runs.liveness import HEARTBEAT_S, STALE_AFTER_S, Heartbeat, live_status, pid_alive
from fnodiag.runs.reader import LayerMatrix, LayerRecords, ScalarRecords, StoreReader
from fnodiag.runs.rundir import RunDir, ensure_writable_dir, list_runs
from fnodiag.runs.states import READ_STATES, STATES
from fnodiag.runs.store import SCHEMA_VERSION, SCOPES, SOURCES, RunStore

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "ensure_writable_dir",
    "jsonable",
    "STATES",
    "SOURCES",
    "SCOPES",
    "SCHEMA_VERSION",
    "RunDir",
    "list_runs",
    "RunStore",
    "StoreReader",
    "ScalarRecords",
    "LayerRecords",
    "LayerMatrix",
    "live_status",
    "pid_alive",
    "Heartbeat",
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "READ_STATES",
]
