"""fnodiag.plots.layers: builders return the right HoloViews elements holding the right data."""

from __future__ import annotations

import holoviews as hv
import numpy as np

from fnodiag import plots

LAYERS = ["lifter", "encoder.0", "bottleneck", "output"]


def matrix(n_steps=10):
    steps = np.arange(n_steps) * 2
    values = np.arange(len(LAYERS) * n_steps, dtype=float).reshape(len(LAYERS), n_steps) + 1
    return steps, values


def test_downsample_bins_means_and_labels_by_last_step():
    steps, values = matrix(10)
    s, v, stride = plots.downsample_steps(steps, values, 4)
    assert stride == 3 and list(s) == [4, 10, 16, 18]  # bins of 3 steps, last bin partial
    np.testing.assert_allclose(v[0], [2, 5, 8, 10])  # row 0 is 1..10
    s2, v2, stride2 = plots.downsample_steps(steps, values, 100)
    assert stride2 == 1 and np.array_equal(v2, values)


def test_heatmap_frame_cells_and_tail_start():
    steps, values = matrix(3)
    values[1, 2] = np.nan
    f = plots.heatmap_frame(LAYERS, steps, values)
    assert list(f.columns) == plots.HEATMAP_COLUMNS
    assert len(f) == len(LAYERS) * 3 - 1  # NaN cells are left out
    cell = f[(f.layer == "output") & (f.step == 4)].iloc[0]
    assert (cell.x0, cell.x1, cell.y0, cell.y1, cell.value) == (2.5, 4.5, -3.5, -2.5, values[3, 2])
    tail = plots.heatmap_frame(LAYERS, [6], values[:, :1], start=4.5)
    assert set(tail.x0) == {4.5} and set(tail.x1) == {6.5}


def test_layer_heatmap_marks_onset_and_earliest_layer():
    steps, values = matrix(10)
    el = plots.layer_heatmap(
        LAYERS,
        steps,
        values,
        stat="spatial_std",
        log=True,
        title="a",
        collapse={"onset_step": 8, "earliest_layer": "bottleneck", "earliest_step": 6},
    )
    rect = el.get(0)
    assert isinstance(rect, hv.Rectangles) and len(rect) == values.size
    np.testing.assert_allclose(np.sort(rect.dimension_values("value")), np.sort(values.ravel()))
    vlines = [e for e in el if isinstance(e, hv.VLine) and e.label == "collapse onset"]
    assert len(vlines) == 1 and vlines[0].data == 8
    star = [e for e in el if isinstance(e, hv.Scatter)]
    assert star and tuple(star[0].array()[0]) == (6.0, -2.0)  # bottleneck is the third layer from the top
    assert rect.opts.get().kwargs["cnorm"] == "log"


def test_layer_heatmap_downsamples_long_runs_and_says_so():
    steps, values = matrix(50)
    el = plots.layer_heatmap(LAYERS, steps, values, stat="std", max_steps=10)
    rect = el.get(0)
    assert len(rect) == len(LAYERS) * 10
    assert "mean of 5 steps" in rect.opts.get().kwargs["title"]


def test_layer_lines_one_curve_per_layer_and_log_drops_nonpositive():
    steps, values = matrix(5)
    values[0, 0] = 0.0
    el = plots.layer_lines(LAYERS, steps, values, stat="std", log=True)
    curves = [e for e in el if isinstance(e, hv.Curve)]
    assert [c.label for c in curves] == LAYERS
    assert len(curves[0]) == 4 and len(curves[1]) == 5
    np.testing.assert_allclose(curves[3].dimension_values("value"), values[3])


def test_scalar_and_loss_curves_keep_labels_and_points():
    el = plots.scalar_curves(
        {"adam": ([0, 1, 2], [1.0, 0.5, np.nan]), "sgd": ([0, 1], [2.0, 1.0])}, ylabel="grad norm", log=True
    )
    assert [c.label for c in el] == ["adam", "sgd"] and len(el.get(0)) == 2
    loss = plots.loss_curves({"adam": {"train": ([0, 1, 2], [3.0, 2.0, 1.0]), "val": ([2], [1.5])}})
    labels = [(type(e).__name__, e.label) for e in loss]
    assert ("Curve", "adam train") in labels and ("Scatter", "adam val") in labels


def test_ssim_bars_and_fingerprint_line():
    el = plots.ssim_bars(
        [{"run": "adam", "best": 0.8, "last": 0.3}, {"run": "sgd", "best": None, "last": 0.7}], fingerprint=0.28
    )
    bars = el.get(0)
    assert isinstance(bars, hv.Bars) and len(bars) == 3
    assert any(isinstance(e, hv.HLine) and e.data == 0.28 for e in el)


def test_ssim_curves_per_run_with_the_fingerprint():
    el = plots.ssim_curves({"adam": ([9, 19, 29], [0.3, 0.5, np.nan]), "sgd": ([9], [0.2])}, fingerprint=0.28)
    kinds = [(type(e).__name__, e.label) for e in el]
    assert kinds[:4] == [("Curve", "adam"), ("Scatter", "adam"), ("Curve", "sgd"), ("Scatter", "sgd")]
    assert len(el.get(0)) == 2  # the NaN epoch is dropped
    assert isinstance(el.get(4), hv.HLine) and el.get(4).data == 0.28
    assert len(plots.ssim_curves({})) == 1  # an empty figure still renders


def test_arms_table_columns():
    rows = [{"arm": "adam", "seed": 1, "state": "finished", "collapse": "healthy", "best_val_loss": 0.1}]
    frame = plots.arms_frame(rows)
    assert list(frame.columns) == plots.ARM_COLUMNS and frame.loc[0, "best_val_loss"] == 0.1
    table = plots.arms_table(rows)
    assert isinstance(table, hv.Table) and table.dimension_values("state")[0] == "finished"


def test_side_by_side_shares_the_step_axis():
    steps, values = matrix(4)
    lay = plots.side_by_side(
        {
            "a": plots.layer_lines(LAYERS, steps, values, stat="std"),
            "b": plots.layer_lines(LAYERS, steps, values * 2, stat="std"),
        }
    )
    assert isinstance(lay, hv.Layout) and len(lay) == 2
    fig = hv.render(lay)
    figs = [c[0] for c in fig.children]
    assert figs[0].x_range is figs[1].x_range  # shared axes


def test_pick_layers_spreads_over_depth_and_keeps_required():
    names = [f"l{i}" for i in range(50)]
    pick = plots.pick_layers(names, 8, must=["l17", None])
    assert len(pick) <= 9 and pick[0] == 0 and pick[-1] == 49 and 17 in pick
    assert plots.pick_layers(names[:5], 8) == [0, 1, 2, 3, 4]


def test_constant_scalar_stays_in_view_on_a_log_axis():
    el = plots.scalar_curves({"adam": ([0, 1, 2], [1e-3, 1e-3, 1e-3])}, ylabel="lr", log=True)
    fig = hv.render(el)
    assert fig.y_range.start < 1e-3 < fig.y_range.end


def test_log_axes_and_colour_bars_get_1_2_5_ticks_linear_ones_keep_bokeh_ticks():
    from bokeh.models import ColorBar, CustomJSTicker

    render = lambda el: hv.renderer("bokeh").get_plot(el).state
    layers, steps = ["a", "b", "c"], np.arange(5)
    values = np.linspace(0.02, 0.3, 15).reshape(3, 5)
    for log in (True, False):
        lines = render(plots.layer_lines(layers, steps, values, stat="s", log=log))
        heat = render(plots.layer_heatmap(layers, steps, values, stat="s", log=log))
        tickers = [lines.yaxis[0].ticker] + [c.ticker for c in heat.select(type=ColorBar)]
        assert all(isinstance(t, CustomJSTicker) == log for t in tickers) and len(tickers) == 2
        # the code the browser test runs for its ticks (test_browser::test_log_axis_ticks_in_the_browser)
        if log:
            assert [t.major_code for t in tickers] == [plots.LOG_TICKS_JS] * 2
            assert lines.yaxis[0].formatter.code == plots.LOG_LABEL_JS


def test_layer_bars_in_order_with_a_log_axis_only_for_positive_values():
    bars = plots.layer_bars(["lifter", "encoder.0", "output"], [0.5, 0.02, 1.5], stat="spatial_std", log=True)
    assert list(bars.dimension_values("layer")) == ["lifter", "encoder.0", "output"]
    opts = lambda el: hv.Store.lookup_options("bokeh", el, "plot").kwargs
    assert opts(bars)["logy"] is True
    assert opts(plots.layer_bars(["a", "b"], [0.0, 1.0], stat="s", log=True))["logy"] is False
