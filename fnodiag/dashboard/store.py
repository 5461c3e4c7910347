"""The dashboard's one ``param.Parameterized`` store: what is selected, and the lists to choose from.

Views read the selection from :class:`DashboardStore` and build their widgets from its parameters
(``pn.Param`` / ``Widget.from_param``); the store knows nothing about Panel. Lists come from the
runs folder through the server's shared :class:`~fnodiag.dashboard.index.RunsIndex` (read incrementally,
:mod:`fnodiag.dashboard.catalog`): sweeps, arms and seeds of the chosen sweep, checkpoints saved by
the chosen runs, and the layer statistics their stores hold. :meth:`DashboardStore.refresh` is cheap
when nothing changed, so the session calls it every second: a run whose folder appears in the chosen
sweep joins the chosen arms and seeds.
"""

from __future__ import annotations

from pathlib import Path

import param

from fnodiag.dashboard.catalog import SINGLE, Catalog, RunEntry, checkpoints, inside, summarize
from fnodiag.dashboard.index import shared_index
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
    rows_budget_s : float or None
        Seconds one reading of the rows may spend on runs' records (None: read every row); rows not read
        in time show their state alone until a later :meth:`refresh_rows` (a served page's first look
        at many runs: its ticks read the rest).
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

    def __init__(self, root: str | Path = "runs", *, rows_budget_s: float | None = None, **params):
        super().__init__(root=str(Path(root).resolve()), **params)
        self.rows_budget_s = rows_budget_s
        self.index = shared_index(self.root)
        self.catalog: Catalog = Catalog(Path(self.root))
        self.pending = 0  # rows of the sweep not read yet (quick rows); refresh_rows reads more
        self._adjusting = False
        self.damaged: dict[Path, str] = {}  # run folder -> why: a store a view found damaged (mark_damaged)
        self.refresh()

    # -- lists ------------------------------------------------------------------------------
    def refresh(self, max_age_s: float = 0.0) -> bool:
        """Rescan the runs folder (a scan by another session younger than ``max_age_s`` is reused); keeps the
        current selection where it still exists, and adds to it the arm and seed of every run of the chosen
        sweep whose folder appeared since the last scan. Returns True when the catalog changed."""
        cat = self.index.catalog(max_age_s)
        if cat is self.catalog:
            return False
        before = {e.run.path for e in self.entries() if e.exists} if self.sweep else None
        self.catalog = cat
        self.damaged = {}  # a rescan looks again (the file may have been restored)
        names = list(cat.sweeps)
        self.param.sweep.objects = names
        problems = "; ".join(cat.problems[:3])
        if not names:
            self.message = f"No runs in {self.root} yet."
        else:
            self.message = f"Skipped: {problems}" if problems else ""
        if self.sweep not in names:
            self.sweep = names[0] if names else None  # triggers _on_sweep
        else:
            joined = [e for e in self.entries() if e.exists and e.run.path not in before] if before else []
            self._on_sweep(keep=True, joined=joined)
        return True

    @param.depends("sweep", watch=True)
    def _on_sweep(self, keep: bool = False, joined=()) -> None:
        arms = self.catalog.arms(self.sweep) if self.sweep else []
        seeds = self.catalog.seeds(self.sweep) if self.sweep else []
        old_arms, old_seeds = list(self.arms), list(self.seeds)
        self.refresh_rows()  # first: the views built on the new selection leave damaged runs out (selected)
        self._adjusting = True
        try:
            with param.parameterized.batch_call_watchers(self):
                self.param.arms.objects = arms
                self.param.seeds.objects = seeds
                kept_arms = [a for a in old_arms if a in arms] if keep else []
                kept_seeds = [s for s in old_seeds if s in seeds] if keep else []
                kept_arms += [e.arm for e in joined if e.arm not in kept_arms]  # a new run joins the chosen
                kept_seeds += [e.seed for e in joined if e.seed is not None and e.seed not in kept_seeds]
                self.arms = [a for a in arms if a in kept_arms] or arms[:MAX_DEFAULT_ARMS]
                self.seeds = [s for s in seeds if s in kept_seeds] or seeds[:1]
        finally:
            self._adjusting = False
        self._on_runs()

    @param.depends("arms", "seeds", watch=True)
    def _on_runs(self) -> None:
        if self._adjusting:
            return
        names = []
        for e in self.selected():
            names += [c for c in checkpoints(e) if c not in names]
        self.param.checkpoint.objects = names or ["best", "last"]
        if self.checkpoint not in self.param.checkpoint.objects:
            self.checkpoint = self.param.checkpoint.objects[0]
        self.refresh_rows()

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

    def refresh_rows(self, budget_s: float | None = None) -> list[dict]:
        """The overview rows (status, history, metrics, collapse) of every run of the sweep, read again where
        a run's records changed (:meth:`fnodiag.dashboard.index.RunsIndex.rows`); runs not read within
        ``budget_s`` (default ``rows_budget_s``) show their state alone until a later call (``pending``
        counts them)."""
        chosen = [e.label for e in self.selected()]
        budget_s = self.rows_budget_s if budget_s is None else budget_s
        entries = self.entries()
        rows, self.pending = self.index.rows(entries, chosen=chosen, budget_s=budget_s)
        rows = [  # a store a view found damaged (mark_damaged): that row says so
            r | {"state": states.DAMAGED, "message": self.damaged[e.run.path]} if e.run.path in self.damaged else r
            for e, r in zip(entries, rows, strict=True)
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

    def past_damage(self, read):
        """``read()``, read again without each selected run whose file it found damaged (:meth:`mark_damaged`,
        its row says why): a view goes on with the other runs. A damaged file of no selected run is raised."""
        while True:
            try:
                return read()
            except DamagedRecord as exc:
                if not self.mark_damaged(exc):
                    raise

    @property
    def any_running(self) -> bool:
        """A run of the sweep trains now or has not started yet (its rows are worth re-reading)."""
        return any(r.get("state") in WATCHED for r in self.rows)
