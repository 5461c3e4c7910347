"""The dashboard's one ``param.Parameterized`` store: what is selected, and the lists to choose from.

Views read the selection from :class:`DashboardStore` and build their widgets from its parameters
(``pn.Param`` / ``Widget.from_param``); the store knows nothing about Panel. Lists come from the
runs folder (:mod:`fnodiag.dashboard.catalog`): sweeps, arms and seeds of the chosen sweep, checkpoints saved by
the chosen runs, and the layer statistics their stores hold.
"""

from __future__ import annotations

from pathlib import Path

import param

from fnodiag.dashboard.catalog import SINGLE, Catalog, RunEntry, checkpoints, inside, scan, summarize
from fnodiag.diagnostics.stats import ACTIVATION_STATS, BRANCH_STAT  # names only (torch, no Lightning)
from fnodiag.runs import states
from fnodiag.runs.damage import DamagedRecord

# the recorder's statistic names (the store contract), spatial_std first: the collapse signal
DEFAULT_ACT_STATS = ["spatial_std", *(s for s in ACTIVATION_STATS if s != "spatial_std"), BRANCH_STAT]
MAX_DEFAULT_ARMS = 4
WATCHED = states.LIVE | {states.NOT_STARTED}  # row states that may change without a rescan


class DashboardStore(param.Parameterized):
    """Selection state over one runs folder.

    Parameters
    ----------
    root : str
        The runs folder; nothing outside it is opened.
    """

    root = param.String(default="runs", constant=True, doc="The runs folder (fixed for the session).")
    sweep = param.Selector(default=None, objects=[], doc="Sweep folder, or '(single runs)'.")
    arms = param.ListSelector(default=[], objects=[], doc="Arms shown side by side.")
    seeds = param.ListSelector(default=[], objects=[], doc="Seeds of the arms.")
    checkpoint = param.Selector(default="best", objects=["best", "last"], doc="Checkpoint to capture.")
    act_stat = param.Selector(default="spatial_std", objects=DEFAULT_ACT_STATS, label="Activation statistic")
    log_color = param.Boolean(default=True, label="Log scale", doc="Log colour / y scale of layer statistics.")
    live = param.Boolean(default=True, label="Live updates", doc="Stream new steps while runs train.")
    rows = param.List(default=[], precedence=-1, doc="Overview rows of every run of the sweep.")
    message = param.String(default="", precedence=-1, doc="What the user should know (problems, empty folder).")

    def __init__(self, root: str | Path = "runs", **params):
        super().__init__(root=str(Path(root).resolve()), **params)
        self.catalog: Catalog = Catalog(Path(self.root))
        self.damaged: dict[Path, str] = {}  # run folder -> why: stores a view found damaged (mark_damaged)
        self.refresh()

    # -- lists ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the runs folder; keeps the current selection where it still exists."""
        self.catalog = scan(self.root)
        self.damaged = {}  # a rescan looks again (the file may have been restored)
        names = list(self.catalog.sweeps)
        self.param.sweep.objects = names
        problems = "; ".join(self.catalog.problems[:3])
        if not names:
            self.message = f"No runs in {self.root} yet."
        else:
            self.message = f"Skipped: {problems}" if problems else ""
        if self.sweep not in names:
            self.sweep = names[0] if names else None  # triggers _on_sweep
        else:
            self._on_sweep(keep=True)

    @param.depends("sweep", watch=True)
    def _on_sweep(self, keep: bool = False) -> None:
        arms = self.catalog.arms(self.sweep) if self.sweep else []
        seeds = self.catalog.seeds(self.sweep) if self.sweep else []
        old_arms, old_seeds = list(self.arms), list(self.seeds)
        self.refresh_rows()  # first: the views built on the new selection leave damaged runs out (selected)
        with param.parameterized.batch_call_watchers(self):
            self.param.arms.objects = arms
            self.param.seeds.objects = seeds
            kept_arms = [a for a in old_arms if a in arms] if keep else []
            kept_seeds = [s for s in old_seeds if s in seeds] if keep else []
            self.arms = kept_arms or arms[:MAX_DEFAULT_ARMS]
            self.seeds = kept_seeds or seeds[:1]
        self._on_runs()

    @param.depends("arms", "seeds", watch=True)
    def _on_runs(self) -> None:
        names = []
        for e in self.selected():
            names += [c for c in checkpoints(e) if c not in names]
        self.param.checkpoint.objects = names or ["best", "last"]
        if self.checkpoint not in self.param.checkpoint.objects:
            self.checkpoint = self.param.checkpoint.objects[0]

    def set_stats(self, stats: list[str]) -> None:
        """Offer the activation statistics the selected stores hold (keeps the current one if present)."""
        if stats and stats != self.param.act_stat.objects:
            self.param.act_stat.objects = stats
            if self.act_stat not in stats:
                self.act_stat = "spatial_std" if "spatial_std" in stats else stats[0]

    # -- selection ----------------------------------------------------------------------------
    def entries(self) -> list[RunEntry]:
        """Every run of the current sweep (the overview table)."""
        return self.catalog.entries(self.sweep) if self.sweep else []

    def selected(self) -> list[RunEntry]:
        """Runs of the chosen arms x seeds that exist on disk, in arm order; a damaged run (its overview row
        says why) is left out, so the views go on with the others."""
        if not self.sweep:
            return []
        seeds = None if self.sweep == SINGLE or not self.param.seeds.objects else set(self.seeds)
        chosen = self.catalog.entries(self.sweep, arms=set(self.arms), seeds=seeds)
        order = {a: i for i, a in enumerate(self.param.arms.objects)}
        damaged = {(r["arm"], r["seed"]) for r in self.rows if r.get("state") == states.DAMAGED}
        return sorted(
            (e for e in chosen if e.exists and (e.arm, e.seed) not in damaged and e.run.path not in self.damaged),
            key=lambda e: (order.get(e.arm, 0), e.seed or 0),
        )

    def resolve(self, path: str | Path) -> Path:
        """A path from the user or a record, resolved; raises ValueError outside the runs folder."""
        return inside(self.root, path)

    def refresh_rows(self) -> list[dict]:
        """Re-read the overview rows (status, history, metrics, collapse) of every run of the sweep."""
        rows = [
            summarize(e)
            | ({"state": states.DAMAGED, "message": self.damaged[e.run.path]} if e.run.path in self.damaged else {})
            for e in self.entries()
        ]
        if rows != self.rows:
            self.rows = rows
        return rows

    def row(self, entry: RunEntry) -> dict:
        """The overview row of ``entry`` (read now when the sweep table does not hold it)."""
        for r in self.rows:
            if r["arm"] == entry.arm and r["seed"] == entry.seed:
                return r
        return summarize(entry)

    def mark_damaged(self, exc: DamagedRecord) -> bool:
        """A selected run whose file ``exc.path`` a view found damaged: left out of :meth:`selected`, its row says
        why. Returns False when ``exc`` names no selected run (the caller re-raises it)."""
        path = Path(exc.path).resolve() if exc.path is not None else None
        for e in self.selected():
            if path is not None and (e.run.path == path or e.run.path in path.parents):
                self.damaged[e.run.path] = str(exc)
                self.refresh_rows()
                return True
        return False

    @property
    def any_running(self) -> bool:
        """A run of the sweep trains now or has not started yet (its rows are worth re-reading)."""
        return any(r.get("state") in WATCHED for r in self.rows)
