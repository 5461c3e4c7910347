"""``sweep.json``: a sweep folder's manifest, read and written here only.

The manifest of a sweep folder::

    {"name": ..., "definition": <source path>, "control": ..., "baseline": ..., "seeds": [...],
     "arms": {arm: {"overrides": <shared + arm + flags>, "flags": <the flags it last ran with>}},
     "runs": {"<arm>-s<seed>": {"arm", "seed", "path", "state", "host", "node", "attempts"}},
     "spec": <SweepDefinition.to_dict()>,
     "execution": <the placement of the latest sweep command>}

The runner creates and updates it (:func:`write_spec`, :func:`record_execution`,
:func:`record_result`: the driver is its only writer); the summary and the dashboard read it
(:func:`read_manifest`, :func:`run_dir`, :func:`sweep_folders`, :func:`asked_config`); a run path that
leaves the sweep folder is refused (:func:`run_dir`). This module imports torch
(through the definitions' name registries), never Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fnodiag.config import ConfigError, RunConfig
from fnodiag.files import write_json
from fnodiag.runs import RunDir
from fnodiag.runs.damage import DamagedRecord
from fnodiag.sweeps.definition import SweepDefinition, run_name

MANIFEST = "sweep.json"


def manifest_path(folder: str | Path) -> Path:
    """Where the manifest of sweep folder ``folder`` lives."""
    return Path(folder) / MANIFEST


def is_sweep(folder: str | Path) -> bool:
    """``folder`` is a sweep folder (it holds a manifest)."""
    return manifest_path(folder).is_file()


def read_manifest(folder: str | Path, default: Any = None) -> Any:
    """The manifest of ``folder`` as a dict, or ``default`` when it has none.

    Raises
    ------
    ValueError
        The file is not valid JSON (one line naming it).
    """
    return RunDir(folder).read_json(MANIFEST, default)


def run_dir(folder: str | Path, entry: dict) -> RunDir:
    """The run folder a manifest's ``runs`` entry names: ``<folder>/<path>``, never outside the sweep folder.

    Parameters
    ----------
    folder : the sweep folder
    entry : dict
        One value of the manifest's ``runs`` (``path`` relative to ``folder``, e.g. ``"control-s1"``).

    Raises
    ------
    DamagedRecord
        An absolute path, one with ``..``, or one that leads out of the folder through a symbolic link:
        refused without being opened (one line naming the manifest and the path).
    """
    folder, rel = Path(folder), entry.get("path")
    refused = DamagedRecord(
        f"{str(manifest_path(folder))!r} names run path {rel!r}, which is not inside the sweep folder; "
        "fnodiag opens only runs inside it (a run's path is its folder name, e.g. 'control-s1')",
        manifest_path(folder),
    )
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise refused
    if folder.resolve() not in (folder / rel).resolve().parents:
        raise refused
    return RunDir(folder / rel)


def sweep_folders(root: str | Path) -> list[Path]:
    """Every sweep folder at or below ``root`` (sorted by manifest path)."""
    return [p.parent for p in sorted(Path(root).rglob(MANIFEST)) if p.is_file()]


def _update(out: Path, change: Callable[[dict], None]) -> None:
    manifest = read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(f"{str(manifest_path(out))!r} does not exist; run the sweep to create it")
    change(manifest)
    write_json(manifest_path(out), manifest, sort_keys=False)  # keeps the arms in definition order


def write_spec(out: str | Path, defn: SweepDefinition, pairs: Iterable[tuple[str, int]], overrides: dict) -> None:
    """Create or update the manifest for a sweep command that runs ``pairs`` of ``defn`` with ``overrides``.

    Runs recorded by earlier commands keep their records; arms run now record this command's flags
    (the others keep theirs).

    Raises
    ------
    ConfigError
        ``out`` holds another sweep.
    """
    out, pairs = Path(out), list(pairs)
    manifest = read_manifest(out, {}) or {}
    if manifest and manifest.get("name") != defn.name:
        raise ConfigError(f"{str(out)!r} holds sweep {manifest.get('name')!r}, not {defn.name!r}; choose another --out")
    runs = manifest.get("runs", {})
    runs.update(
        {
            run_name(a, s): {**runs.get(run_name(a, s), {}), "arm": a, "seed": s, "path": run_name(a, s)}
            for a, s in pairs
        }
    )  # keeps where earlier sweep commands trained each run
    before = manifest.get("arms", {})
    chosen = {a for a, _ in pairs}
    arm_entries = {
        a: (
            {"overrides": {**defn.shared, **defn.arms[a], **overrides}, "flags": dict(overrides)}
            if a in chosen or a not in before
            else before[a]
        )
        for a in dict.fromkeys(r["arm"] for r in runs.values())
    }
    manifest.update(
        {
            "name": defn.name,
            "definition": defn.source,
            "control": defn.control,
            "baseline": defn.baseline,
            "seeds": sorted({r["seed"] for r in runs.values()}),
            "arms": arm_entries,
            "runs": runs,
            "spec": defn.to_dict(),
        }
    )
    write_json(manifest_path(out), manifest, sort_keys=False)


def record_execution(out: str | Path, execution: dict) -> None:
    """``execution``: the executor and the placement of the latest sweep command (a JSON-able dict)."""
    _update(Path(out), lambda m: m.__setitem__("execution", execution))


def record_result(out: str | Path, result: dict, attempts: list[dict]) -> None:
    """``runs[name]``: the run's state, the host and node of its last attempt, and every attempt.

    Parameters
    ----------
    result : dict
        A task's result (``name``, ``state``, ...).
    attempts : list of dict
        The run's attempts (its ``execution.json``), oldest first.
    """
    last = attempts[-1] if attempts else {}

    def change(m: dict) -> None:
        m["runs"].setdefault(result["name"], {}).update(
            state=result["state"], host=last.get("host"), node=last.get("node"), attempts=attempts
        )

    _update(Path(out), change)


def asked_config(manifest: dict, arm: str, seed: int) -> RunConfig | None:
    """What the sweep's definition (``spec``) and the arm's recorded flags resolve to for one run.

    None for a manifest that does not record them (written before flags were recorded, or a plain
    runs folder's made-up manifest) or a definition that no longer resolves.
    """
    if not manifest.get("spec"):
        return None
    flags = (manifest.get("arms", {}).get(arm) or {}).get("flags")
    if flags is None:
        return None
    try:
        return SweepDefinition.from_dict(manifest["spec"]).config(arm, seed, flags)
    except (ConfigError, KeyError, TypeError):
        return None
