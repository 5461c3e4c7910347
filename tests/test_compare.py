"""Arms compared layer by layer: the maths of :mod:`fnodiag.analysis.compare` against plain numpy loops, and the
dashboard's Compare tab over a real two-arm, two-seed tiny sweep (numbers checked against the raw store rows)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fnodiag.analysis import compare

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the `app` package of the checkout, as test_app


def _seed(layers, steps, rng):
    return list(layers), np.asarray(steps, np.int64), rng.uniform(0.1, 2.0, (len(layers), len(steps)))


def test_seed_mean_and_spread_match_a_loop_over_seeds():
    rng = np.random.default_rng(0)
    a = _seed(["in", "mid", "out"], [0, 2, 4, 6, 8], rng)
    b = _seed(["in", "mid", "extra", "out"], [0, 2, 4, 6], rng)  # still training: one step fewer, one more layer
    c = _seed(["in", "mid", "out"], [0, 2, 4, 6, 8, 10], rng)
    a[2][1, 3] = np.nan  # a missing value: the others' mean there
    got = compare.seed_stats([a, b, c, ([], np.zeros(0, np.int64), np.zeros((0, 0)))])
    assert got.layers == ["in", "mid", "out", "extra"]  # network order of the first seed, newcomers after
    assert got.steps.tolist() == [0, 2, 4, 6] and got.seeds == 3
    for i, layer in enumerate(got.layers):
        for j, step in enumerate(got.steps):
            vals = [v[names.index(layer), list(s).index(step)] for names, s, v in (a, b, c) if layer in names]
            vals = [x for x in vals if np.isfinite(x)]
            assert got.count[i, j] == len(vals)
            assert got.mean[i, j] == pytest.approx(sum(vals) / len(vals))
            mu = sum(vals) / len(vals)
            assert got.std[i, j] == pytest.approx(math.sqrt(sum((x - mu) ** 2 for x in vals) / len(vals)))
            assert (got.lo[i, j], got.hi[i, j]) == (min(vals), max(vals))
    assert got.count[3].tolist() == [1, 1, 1, 1]


def test_log_ratio_is_aligned_on_common_layers_and_steps():
    rng = np.random.default_rng(1)
    arm = compare.seed_stats([_seed(["a", "b", "c"], [0, 1, 2, 3, 5], rng)])
    ref = compare.seed_stats([_seed(["c", "a", "z"], [1, 2, 3, 4, 5, 6], rng)])
    ref.mean[0, 1] = 0.0  # non-positive: no log
    layers, steps, values = compare.log_ratio(arm, ref)
    assert layers == ["a", "c"] and steps.tolist() == [1, 2, 3, 5]
    for i, layer in enumerate(layers):
        for j, step in enumerate(steps):
            x = arm.mean[arm.layers.index(layer), list(arm.steps).index(step)]
            y = ref.mean[ref.layers.index(layer), list(ref.steps).index(step)]
            expected = math.log(x / y) if y > 0 else None
            assert np.isnan(values[i, j]) if expected is None else values[i, j] == pytest.approx(expected)
    assert np.isnan(values[1, 1])  # "c" at step 2 is the zeroed reference value
    rows = compare.ratio_table(layers, steps, values)
    assert len(rows) == np.isfinite(values).sum() and rows[0] == {
        "layer": "a",
        "order": 0,
        "step": 1,
        "log_ratio": pytest.approx(values[0, 0]),
    }


def test_step_choice_and_epoch_ends():
    steps = np.array([0, 2, 4, 6])
    assert [compare.step_at(steps, s) for s in (None, -3, 0, 3, 6, 99)] == [6, 0, 0, 2, 6, 6]
    assert compare.step_at(np.zeros(0), 3) is None
    assert compare.last_step_of_epoch([0, 1, 2, 3, 4], [0, 0, 0, 1, 1], 0) == 2
    assert compare.last_step_of_epoch([0, 1], [0, 0], 5) is None


@pytest.fixture
def sweep(two_arm_sweep):
    return two_arm_sweep


def _raw(run_dir, source, stat, step):
    """{layer: value} at ``step`` straight from the store's per-value rows (not the pivot)."""
    from fnodiag.runs import StoreReader

    with StoreReader(Path(run_dir) / "run.sqlite") as r:
        rec = r.layer_stats(source=source, stat=stat)
    keep = rec.step == step
    return dict(zip(rec.layer[keep].tolist(), rec.value[keep].tolist()))


def test_compare_view_over_a_real_two_arm_sweep(sweep):
    from fnodiag.dashboard.dashboard import Dashboard

    d = Dashboard(sweep.parent)
    view = next(v for v in d.views if v.title == "Compare")
    d.store.seeds = [7, 8]
    assert not view.arms  # nothing read (nor rendered) until the tab is opened
    d.tabs.active = d.views.index(view)
    assert list(view.arms) == ["adam", "sgd"] and view.reference == "adam"
    view.stat = "std"
    step = view.param.step.bounds[1]
    assert view.step == step > 0
    # side-by-side values: seed mean / min / max of each layer, in the store's network order
    frame = pd.DataFrame(view.layer_rows)
    for arm in ("adam", "sgd"):
        raw = [_raw(sweep / f"{arm}-s{seed}", "activation", "std", step) for seed in (7, 8)]
        got = frame[frame.arm == arm]
        assert got.layer.tolist() == list(raw[0])  # logging order = network order
        for _, row in got.iterrows():
            vals = [r[row.layer] for r in raw]
            assert row["mean"] == pytest.approx(np.mean(vals)) and row["min"] == min(vals) and row["max"] == max(vals)
            assert row.seeds == 2 and row.step == step
    # the difference map: ln(sgd mean / adam mean) on every (layer, step) both hold
    ratio = pd.DataFrame(view.ratio_rows)
    assert set(ratio.arm) == {"sgd"} and set(ratio.reference) == {"adam"}
    at = ratio[ratio.step == step].set_index("layer").log_ratio
    sgd = [_raw(sweep / f"sgd-s{s}", "activation", "std", step) for s in (7, 8)]
    adam = [_raw(sweep / f"adam-s{s}", "activation", "std", step) for s in (7, 8)]
    for layer, value in at.items():
        assert value == pytest.approx(np.log(np.mean([r[layer] for r in sgd]) / np.mean([r[layer] for r in adam])))
    steps = sorted(set(ratio.step))
    assert len(ratio) == len(at) * len(steps)
    # an epoch choice moves the step to the epoch's last logged step; another source offers its own stats
    from fnodiag.runs import StoreReader

    with StoreReader(sweep / "adam-s7" / "run.sqlite") as r:
        rec = r.layer_stats(source="activation", stat="std")
    view.epoch = 0
    assert view.step == rec.step[rec.epoch == 0].max() < step
    view.reference = "sgd"
    assert set(pd.DataFrame(view.ratio_rows).arm) == {"adam"}
    view.source = "param"
    assert view.stat in ("update_ratio", "weight_norm") and view.layer_rows
    csv = view._plots[0][1].callback().read().decode().splitlines()
    assert csv[0] == ",".join(["arm", "step", "layer", "order", "mean", "std", "min", "max", "seeds"])
    assert len(csv) - 1 == len(view.layer_rows)
