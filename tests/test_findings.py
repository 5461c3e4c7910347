"""Findings detectors on synthetic series with known answers: each fires at the planted step and layer and
stays silent on clean series (noisy healthy growth); ranking puts the more severe, then the earlier, then the
stronger first; findings serialise and link to their evidence.
"""

from __future__ import annotations

import json
import math
import urllib.parse

import numpy as np
import pytest

from fnodiag.analysis.audit import warning
from fnodiag.analysis.findings import settings_findings
from fnodiag.diagnostics.detectors import (
    RunRecords,
    collapse_findings,
    dead_findings,
    detect,
    gradient_findings,
    nonfinite_findings,
    position,
)
from fnodiag.diagnostics.findings import Finding, evidence_link, rank, strength
from fnodiag.diagnostics.regime import (
    departure,
    drift_findings,
    regime_findings,
    spectral_findings,
    update_ratio_findings,
)

STEPS = np.arange(0, 600, 10)  # 60 captures
LAYERS = ["lifter", "encoder.0", "encoder.1", "bottleneck", "decoder.0", "head", "output"]


def healthy(seed=0, scale=1.0):
    """Noisy healthy growth: rises 6x over the run with 3 % noise (relative to the plateau)."""
    rng = np.random.default_rng(seed)
    return scale * (0.1 + 0.5 * (1 - np.exp(-STEPS / 150)) + 0.03 * rng.standard_normal(len(STEPS)))


def matrix(plant: dict | None = None, scale=1.0):
    """``(LAYER, STEP)`` healthy rows; ``plant = {layer: (step, fn(row_after) -> new)}``."""
    m = np.stack([healthy(i, scale) for i in range(len(LAYERS))])
    for layer, (step, fn) in (plant or {}).items():
        i = LAYERS.index(layer)
        m[i, STEPS >= step] = fn(m[i, STEPS >= step])
    return m


# -- the regime rule -------------------------------------------------------------------------------------


def test_departure_fires_at_the_planted_step_and_not_on_healthy_growth():
    assert departure(healthy(), STEPS) is None
    v = healthy()
    v[STEPS >= 300] *= 1e3
    d = departure(v, STEPS)
    assert (d.step, d.last_step, d.direction) == (300, 590, "up") and d.ratio > 100
    v = healthy()
    v[STEPS >= 410] = 0.0  # a fall to exactly 0 is infinitely far on the log scale
    d = departure(v, STEPS)
    assert (d.step, d.direction, d.ratio) == (410, "down", 0.0)
    assert departure(v, STEPS, direction="up") is None


def test_departure_ignores_a_spike_that_comes_back_and_nan_gaps():
    v = healthy()
    v[(STEPS >= 200) & (STEPS < 260)] *= 1e4
    assert departure(v, STEPS) is None
    v = healthy()
    v[STEPS >= 500] *= 1e-3
    v[::3] = np.nan  # missing captures
    assert departure(v, STEPS).step == 500
    v[-1] = 0.5  # the last capture is back in range: not for good
    assert departure(v, STEPS) is None


def test_departure_needs_enough_captures_and_a_lasting_stretch():
    v = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1e3])
    assert departure(v, np.arange(6)) is None  # one outside capture < min_points
    assert departure(v, np.arange(6), min_points=1).step == 5
    assert departure(v[:4], np.arange(4)) is None  # shorter than baseline + min_points
    noisy = np.exp(np.random.default_rng(0).normal(0, 2.0, 60))  # a baseline spread of ~2 decades ...
    noisy[40:] *= 300  # ... hides a 300x step (k * MAD > 2 decades)
    assert departure(noisy, STEPS) is None
    with pytest.raises(ValueError, match="direction"):
        departure(v, np.arange(6), direction="sideways")


# -- each detector on planted series ----------------------------------------------------------------------


def test_regime_change_names_the_layer_and_step():
    stats = {
        "std": (LAYERS, STEPS, matrix({"encoder.1": (300, lambda r: r * 500)})),
        "p99": (LAYERS, STEPS, matrix({"decoder.0": (450, lambda r: r * 1e-3)}, scale=3.0)),
    }
    found = regime_findings(stats)
    assert {(f.layer, f.first, f.statistic) for f in found} == {("encoder.1", 300, "std"), ("decoder.0", 450, "p99")}
    assert all(f.kind == "regime_change" and f.last == 590 and f.source == "activation" for f in found)
    assert regime_findings({"std": (LAYERS, STEPS, matrix())}) == []


def test_one_finding_per_layer_its_earliest_statistic():
    stats = {
        "std": (LAYERS, STEPS, matrix({"head": (400, lambda r: r * 1e3)})),
        "spatial_std": (LAYERS, STEPS, matrix({"head": (350, lambda r: r * 0.0)})),
    }
    (f,) = regime_findings(stats)
    assert (f.layer, f.first, f.statistic, f.size, f.score) == ("head", 350, "spatial_std", 0.0, 12.0)


def test_dead_channels_and_dead_units():
    mcs = matrix({"decoder.0": (250, lambda r: r * 0.0)}, scale=0.1)
    std = (LAYERS, STEPS, matrix())
    frac = matrix(scale=0.2)  # ~0.02-0.12 of the activations near zero
    frac[LAYERS.index("head"), STEPS >= 400] = 0.95
    found = dead_findings(LAYERS, STEPS, mcs, std=std, frac_near_zero=(LAYERS, STEPS, frac))
    assert {(f.kind, f.layer, f.first) for f in found} == {
        ("dead_channels", "decoder.0", 250),
        ("dead_units", "head", 400),
    }
    clean = dead_findings(LAYERS, STEPS, matrix(scale=0.1), std=std, frac_near_zero=(LAYERS, STEPS, matrix(scale=0.2)))
    assert clean == []
    big = matrix(scale=1e6)  # the threshold scales with the layer's std: 1e-6 + 1e-4 x 1e6 ~ 100
    assert dead_findings(LAYERS, STEPS, big * 1e-3, std=(LAYERS, STEPS, big)) == []
    assert len(dead_findings(LAYERS, STEPS, big * 1e-5, std=(LAYERS, STEPS, big))) == len(LAYERS)


def test_vanishing_and_exploding_gradients():
    g = matrix(
        {
            "encoder.0": (200, lambda r: np.where(np.arange(len(r)) < 3, r * 1e5, r)),  # a 3-capture burst
            "bottleneck": (350, lambda r: r * 1e-6),
        }
    )
    found = {(f.kind, f.layer): f for f in gradient_findings(LAYERS, STEPS, g)}
    assert set(found) == {("exploding_gradients", "encoder.0"), ("vanishing_gradients", "bottleneck")}
    assert (found["exploding_gradients", "encoder.0"].first, found["exploding_gradients", "encoder.0"].last) == (
        200,
        220,
    )
    assert found["vanishing_gradients", "bottleneck"].first == 350
    assert gradient_findings(LAYERS, STEPS, matrix()) == []


def test_update_ratios_are_read_per_unit_of_learning_rate():
    rng = np.random.default_rng(5)
    ratios = 1e-3 * np.exp(0.2 * rng.standard_normal((len(LAYERS), len(STEPS))))
    lr = (STEPS, np.full(len(STEPS), 1e-3))
    planted = ratios.copy()
    planted[LAYERS.index("bottleneck"), STEPS >= 200] *= 300
    (f,) = update_ratio_findings(LAYERS, STEPS, planted, lr=lr)
    assert (f.kind, f.layer, f.first, f.source, f.statistic) == (
        "update_ratio",
        "bottleneck",
        200,
        "param",
        "update_ratio",
    )
    kicked = ratios * np.where(STEPS >= 200, 300.0, 1.0)  # every module: the schedule raised the lr 300x
    kick_lr = (STEPS, np.where(STEPS >= 200, 0.3, 1e-3))
    assert update_ratio_findings(LAYERS, STEPS, kicked, lr=kick_lr) == []
    assert len(update_ratio_findings(LAYERS, STEPS, kicked)) == len(LAYERS)  # raw ratios: all of them
    sparse_lr = (np.array([0, 200]), np.array([1e-3, 0.3]))  # lr logged at fewer steps: last value in effect
    assert update_ratio_findings(LAYERS, STEPS, kicked, lr=sparse_lr) == []


def test_affine_drift_of_norm_weights_but_not_growing_layerscale():
    norm = ["encoder.0.norm", "encoder.1.norm"]
    rng = np.random.default_rng(2)
    weight = 1 + 0.01 * rng.standard_normal((2, len(STEPS)))
    weight[1, STEPS >= 330] = 0.05
    layerscale = np.tile(1e-3 + 1e-3 * STEPS / 10, (2, 1))  # 1e-3 -> 0.06: LayerScale learning its scale
    found = drift_findings(
        {"weight_abs_min": (norm, STEPS, weight), "layerscale_abs_max": (["encoder.0", "encoder.1"], STEPS, layerscale)}
    )
    assert [(f.kind, f.layer, f.first, f.statistic) for f in found] == [
        ("affine_drift", "encoder.1.norm", 330, "weight_abs_min")
    ]
    assert drift_findings({"layerscale_abs_max": (["encoder.0"], STEPS, layerscale[:1] * 1e3 ** (STEPS >= 400))})


def test_spectral_energy_moving_above_the_kept_modes():
    rng = np.random.default_rng(4)
    above = 0.03 + 0.01 * rng.random((len(LAYERS), len(STEPS)))
    assert spectral_findings(LAYERS, STEPS, above) == []
    above[LAYERS.index("encoder.1"), STEPS >= 320] = 0.4
    (f,) = spectral_findings(LAYERS, STEPS, above)
    assert (f.kind, f.layer, f.first, f.statistic, f.tab) == (
        "spectral_above",
        "encoder.1",
        320,
        "spectral_above",
        "spectra",
    )
    assert f.size == pytest.approx(0.4 / np.median(above[2, :12]))
    above[LAYERS.index("encoder.1"), STEPS >= 320] = 0.11  # up by less than 0.1 of the energy: no finding
    above[LAYERS.index("head"), :] = 0.5
    above[LAYERS.index("head"), STEPS >= 300] = 0.01  # down: energy back inside the kept modes is no problem
    assert spectral_findings(LAYERS, STEPS, above) == []


def test_nonfinite_names_the_first_step_and_place():
    records = RunRecords(
        layers={
            ("activation", "nonfinite"): (LAYERS, STEPS, np.zeros((len(LAYERS), len(STEPS)))),
            ("param", "update_ratio"): (["head"], STEPS, np.full((1, len(STEPS)), np.inf)),  # inf by construction
            ("grad", "norm"): (["head"], STEPS, np.ones((1, len(STEPS)))),
        },
        scalars={"train/loss": (STEPS, np.ones(len(STEPS)))},
    )
    assert nonfinite_findings(records) == []
    records.layers[("activation", "nonfinite")][2][LAYERS.index("bottleneck"), STEPS >= 410] = 12
    records.layers[("activation", "nonfinite")][2][LAYERS.index("head"), STEPS >= 410] = 3
    records.layers[("grad", "norm")][2][0, STEPS >= 420] = np.inf
    records.scalars["train/loss"][1][STEPS >= 400] = np.nan
    (f,) = nonfinite_findings(records)
    assert (f.kind, f.first, f.layer, f.statistic, f.source) == ("nonfinite", 400, None, "train/loss", "scalar")
    records.scalars["train/loss"][1][:] = 1.0
    (f,) = nonfinite_findings(records)
    assert (f.first, f.layer, f.statistic, f.last, f.size) == (410, "bottleneck", "nonfinite", 590, 3.0)
    assert f.details["places_at_first"] == ["activation/bottleneck/nonfinite", "activation/head/nonfinite"]


def test_vanishing_gradients_on_short_runs_use_the_absolute_floor():
    g = np.array([[1.0, 0.8, 0.9, 1e-9, 1e-10, 0.0], [1.0, 0.8, 0.9, 0.7, 0.8, 0.9]])
    (f,) = gradient_findings(["a", "b"], np.arange(6) * 5, g)  # too short for the early-median rule
    assert (f.kind, f.layer, f.first, f.last) == ("vanishing_gradients", "a", 15, 25)


def test_modules_rank_with_their_layer():
    order = ["lifter", "encoder.0", "decoder.0"]
    assert [position(n, order) for n in ("lifter.conv1", "decoder.0", "decoder.0.conv2.x", "down.0", None)] == [
        0,
        2,
        2,
        3,
        0,
    ]
    v = np.ones((3, len(STEPS)))
    v[:, STEPS >= 300] = 0.0
    records = RunRecords(
        layers={
            ("activation", "std"): (order, STEPS, np.ones((3, len(STEPS)))),
            ("grad", "norm"): (["decoder.0.conv1", "down.0", "lifter.conv1"], STEPS, v),
        }
    )
    assert records.order() == order
    assert [f.layer for f in detect(records)] == ["lifter.conv1", "decoder.0.conv1", "down.0"]


def test_collapse_is_wrapped_as_decided():
    report = {
        "verdict": "collapsed",
        "onset_step": 56,
        "earliest_layer": "decoder.0",
        "earliest_step": 54,
        "output_layer": "output",
        "learned_then_collapsed": True,
        "output_spatial_std": {"peak": 0.05, "last": 5e-9},
    }
    (f,) = collapse_findings(report, order=LAYERS)
    assert (f.kind, f.layer, f.first, f.last, f.statistic, f.position) == (
        "collapse",
        "decoder.0",
        54,
        56,
        "spatial_std",
        4,
    )
    assert f.size == pytest.approx(1e-7) and f.score == pytest.approx(7.0)
    assert "after it had learned" in f.sentence
    assert collapse_findings({**report, "verdict": "healthy"}) == []
    assert collapse_findings(None) == []
    (m,) = collapse_findings({"verdict": "collapsed", "onset_step": None, "earliest_layer": None, "output_layer": None})
    assert m.first is None and "last metrics" in m.sentence


def test_detect_is_silent_on_a_clean_run_and_finds_a_planted_one():
    clean = RunRecords(
        layers={
            ("activation", s): (LAYERS, STEPS, matrix(scale=k))
            for s, k in (("std", 1), ("spatial_std", 1), ("p99", 3), ("min_channel_std", 0.2), ("nonfinite", 0))
        }
        | {("grad", "norm"): (LAYERS, STEPS, matrix()), ("param", "update_ratio"): (LAYERS, STEPS, matrix(scale=1e-3))},
        scalars={"lr": (STEPS, np.full(len(STEPS), 1e-3)), "train/loss": (STEPS, 1 / (1 + STEPS))},
        collapse={"verdict": "healthy"},
    )
    assert detect(clean) == []
    clean.layers[("activation", "std")][2][LAYERS.index("head"), STEPS >= 300] *= 1e3
    (f,) = detect(clean)
    assert (f.kind, f.layer, f.first) == ("regime_change", "head", 300)


# -- ranking, serialisation, links, settings ----------------------------------------------------------------


def F(kind, first, size=10.0, position=0, layer="x"):
    return Finding(kind=kind, sentence="", layer=layer, first=first, size=size, score=strength(size), position=position)


def test_rank_severity_then_earliest_then_strongest_then_upstream():
    found = [
        F("regime_change", 10),
        F("exploding_gradients", 52, size=1e8),
        F("collapse", 56, size=0.0),
        F("dead_channels", 56, size=0.0, position=3, layer="head"),
        F("dead_channels", 56, size=0.0, position=1, layer="decoder.0"),
        F("exploding_gradients", 52, size=1e4),
        F("settings", None),
        F("update_ratio", 10, size=1e3),
    ]
    order = [(f.kind, f.first, f.layer, f.size) for f in rank(found)]
    assert order == [
        ("collapse", 56, "x", 0.0),
        ("settings", None, "x", 10.0),
        ("exploding_gradients", 52, "x", 1e8),
        ("exploding_gradients", 52, "x", 1e4),
        ("dead_channels", 56, "decoder.0", 0.0),
        ("dead_channels", 56, "head", 0.0),
        ("update_ratio", 10, "x", 1e3),
        ("regime_change", 10, "x", 10.0),
    ]
    assert rank(reversed(found)) == rank(found)


def test_strength_in_decades():
    assert [strength(s) for s in (None, math.nan, 0.0, math.inf, 1.0, 1e3, 1e-4, 1e40)] == [0, 0, 12, 12, 0, 3, 4, 12]


def test_finding_to_dict_and_its_link():
    f = F("regime_change", 300, size=math.inf, layer="enc 1&2/x")
    f = Finding(**{**f.__dict__, "statistic": "p99", "tab": "activations", "details": {"baseline": math.nan}})
    linked = f.with_link("sweep a/run=1")
    d = json.loads(json.dumps(linked.to_dict()))
    assert d["severity"] == "warning" and d["size"] is None and d["details"]["baseline"] is None
    path, query = linked.link.split("?")
    assert path == "/app" and "&" not in urllib.parse.unquote_plus(query).split("layer=")[0].split("run=")[1][:-1]
    assert urllib.parse.parse_qs(query) == {
        "run": ["sweep a/run=1"],
        "tab": ["activations"],
        "stat": ["p99"],
        "layer": ["enc 1&2/x"],
        "step": ["300"],
    }
    assert evidence_link("r", Finding(kind="settings", sentence="")) == "/app?run=r"
    with pytest.raises(ValueError, match="unknown finding kind"):
        Finding(kind="bad", sentence="")


def test_settings_findings_wrap_audit_warnings():
    texts = [
        warning("run-a", {"field": "optimizer.class", "asked": "SGD", "got": "Adam"}),
        warning(
            "run-a",
            {"field": "lr per step (warmup_cosine)", "asked": 1e-3, "got": 5e-4, "step": 40, "epoch": 4, "n_differ": 9,
             "n_steps": 100},
        ),
    ]  # fmt: skip
    a, b = settings_findings(texts)
    assert (a.kind, a.statistic, a.first, a.severity) == ("settings", "optimizer.class", None, "error")
    assert "asked 'SGD', got 'Adam'" in a.sentence
    assert (b.statistic, b.first) == ("lr per step (warmup_cosine)", 40)
