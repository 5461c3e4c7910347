"""Tests of fnodiag.diagnostics.hooks: targets, hook lifetime, no retained activations, collect."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from torch import nn

from fnodiag.config import ModelConfig
from fnodiag.diagnostics.hooks import OUTPUT, ActivationRecorder, TargetPlan, default_targets
from fnodiag.diagnostics.stats import (
    ACTIVATION_STATS,
    BRANCH_STAT,
    GLOBAL_STATS,
    SPATIAL_STATS,
    activation_stats,
    branch_ratio,
)
from fnodiag.models import MODELS, HybridUNO, build_model

ARCHS = ("hybrid", "stable_hybrid", "prenorm_hybrid")
IDX = {name: i for i, name in enumerate(ACTIVATION_STATS)}


def tiny(arch: str = "hybrid") -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, blocks=2, width=4, modes=4), 16)


def batch(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def hook_counts(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_every_arch_is_covered():
    assert set(ARCHS) == set(MODELS)


def test_default_targets_control_exact():
    assert default_targets(tiny("hybrid")) == [
        "lifter",
        "encoder.0",
        "encoder.0.spectral",
        "encoder.0.local",
        "encoder.1",
        "encoder.1.spectral",
        "encoder.1.local",
        "bottleneck",
        "bottleneck.spectral",
        "bottleneck.local",
        "decoder.0",
        "head",
        "output",
    ]


@pytest.mark.parametrize("arch", ARCHS)
def test_default_targets_exist_and_record_on_every_arch(arch):
    model = tiny(arch)
    targets = default_targets(model)
    modules = dict(model.named_modules())
    assert targets[-1] == OUTPUT and all(t in modules for t in targets[:-1])
    assert ("encoder.0.norm" in targets) == (arch != "hybrid")
    with ActivationRecorder(model) as rec:
        model(batch())
    results = rec.results()
    assert set(results) == set(targets)
    for layer, values in results.items():
        assert values.shape == (len(ACTIVATION_STATS),) and values.dtype == torch.float32, layer
        assert torch.isfinite(values[: IDX["low_freq_ratio"] + 1]).all(), layer
    assert set(rec.branch_ratios()) == {"encoder.0", "encoder.1", "bottleneck"}


def test_hook_stats_and_branch_ratio_match_direct_computation():
    model = tiny("stable_hybrid")
    x = batch()
    with ActivationRecorder(model) as rec:
        y = model(x)
    with torch.no_grad():
        h = model.lifter(x)
        s, loc = model.encoder[0].spectral(h), model.encoder[0].local(h)
    results = rec.results()
    torch.testing.assert_close(results["lifter"], activation_stats(h))
    torch.testing.assert_close(results["encoder.0.spectral"], activation_stats(s))
    torch.testing.assert_close(results[OUTPUT], activation_stats(y))
    torch.testing.assert_close(rec.branch_ratios()["encoder.0"], branch_ratio(s, loc))


def test_hooks_removed_on_exit_and_double_remove_safe():
    model = tiny("prenorm_hybrid")
    rec = ActivationRecorder(model)
    assert hook_counts(model) == 0
    with rec:
        assert rec.registered and hook_counts(model) == len(rec.targets)
        rec.register()  # already registered: no duplicates
        assert hook_counts(model) == len(rec.targets)
    assert not rec.registered and hook_counts(model) == 0
    rec.remove()
    rec.remove()
    assert hook_counts(model) == 0
    with rec:  # re-usable after removal
        model(batch())
    assert hook_counts(model) == 0 and rec.results()


def test_hooks_removed_when_the_block_raises():
    model = tiny("stable_hybrid")
    with pytest.raises(RuntimeError, match="boom"):
        with ActivationRecorder(model):
            model(batch())
            raise RuntimeError("boom")
    assert hook_counts(model) == 0
    with pytest.raises(ValueError, match="HybridUNO expects"):
        with ActivationRecorder(model):
            model(torch.zeros(1, 1, 8, 8))  # the forward itself fails
    assert hook_counts(model) == 0


def test_no_activation_survives_the_hook():
    model = tiny("stable_hybrid")
    refs: dict[str, weakref.ref] = {}

    def spy(name):
        def hook(module, args, output):
            refs[name] = weakref.ref(output)

        return hook

    with ActivationRecorder(model) as rec:
        spies = [model.get_submodule(n).register_forward_hook(spy(n)) for n in ("encoder.0.spectral", "head")]
        spies.append(model.register_forward_hook(spy(OUTPUT)))
        y = model(batch())  # with autograd: the graph holds activations
        for handle in spies:
            handle.remove()
    assert y.requires_grad
    del y
    gc.collect()
    assert {name: ref() for name, ref in refs.items()} == {name: None for name in refs}
    assert set(rec.results()) >= set(refs)


def test_results_are_from_the_last_forward_and_inactive_hooks_do_nothing():
    model = tiny()
    with ActivationRecorder(model, ["head", OUTPUT]) as rec:
        model(batch(0))
        y = model(batch(1))
        torch.testing.assert_close(rec.results()[OUTPUT], activation_stats(y))
        rec.clear()
        rec.active = False
        model(batch(2))
        assert rec.results() == {}
        rec.active = True
        model(batch(3))
        assert set(rec.results()) == {"head", OUTPUT}


def test_collect_one_transfer_then_clear(count_transfers, monkeypatch):
    model = tiny("stable_hybrid")
    with ActivationRecorder(model) as rec:
        model(batch())
    calls = count_transfers()
    expected_ratio = rec.branch_ratios()["bottleneck"]
    expected_p95 = rec.results()["encoder.1.norm"][IDX["p95"]]
    values = rec.collect()
    assert calls == {"cpu": 1, "item": 0, "tolist": 0}
    monkeypatch.undo()
    assert len(values) == len(ACTIVATION_STATS) * len(rec.targets) + 3
    assert all(isinstance(v, float) for v in values.values())
    assert values[("bottleneck", BRANCH_STAT)] == pytest.approx(expected_ratio.item())
    assert values[("encoder.1.norm", "p95")] == pytest.approx(expected_p95.item())
    assert rec.results() == {} and rec.branch_ratios() == {} and rec.collect() == {}


def test_zeroed_head_gives_constant_output_stats():
    model = tiny("stable_hybrid")
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    with ActivationRecorder(model, ["head", OUTPUT]) as rec:
        model(batch())
    values = rec.collect()
    for layer in ("head", OUTPUT):
        assert values[(layer, "spatial_std")] == 0
        assert values[(layer, "min_channel_std")] == 0
        assert values[(layer, "frac_near_zero")] == 1
    assert math.isnan(values[(OUTPUT, "low_freq_ratio")])  # zero power everywhere


def test_branch_ratio_needs_both_branches_and_custom_targets():
    model = tiny()
    with ActivationRecorder(
        model, ["encoder.0.spectral", "encoder.1.spectral", "encoder.1.local", "encoder.1.local"]
    ) as rec:
        model(batch())
    assert rec.targets == ["encoder.0.spectral", "encoder.1.spectral", "encoder.1.local"]
    assert set(rec.branch_ratios()) == {"encoder.1"}


def test_unknown_targets_rejected_with_valid_names():
    model = tiny()
    with pytest.raises(ValueError, match=r"unknown target\(s\) 'encoder.7'.*valid names include: output, lifter"):
        ActivationRecorder(model, ["lifter", "encoder.7"])
    with pytest.raises(ValueError, match="unknown target"):
        ActivationRecorder(model, [""])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices on importing dynamo
def test_compiled_module_refused():
    model = tiny()
    compiled = torch.compile(model)  # lazy: nothing is compiled here
    with pytest.raises(ValueError, match=r"uncompiled module \(model._orig_mod\)"):
        ActivationRecorder(compiled)
    ActivationRecorder(compiled._orig_mod)


def test_plain_model_and_tuple_outputs():
    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x), "meta"

    model = TupleOut()
    assert default_targets(model) == [OUTPUT]
    with ActivationRecorder(model, ["lin", OUTPUT]) as rec:
        out, _ = model(torch.ones(2, 3))
    torch.testing.assert_close(rec.results()[OUTPUT], activation_stats(out), equal_nan=True)
    assert rec.results()["lin"].shape == (len(GLOBAL_STATS),) and rec.stat_names()["lin"] == GLOBAL_STATS
    values = rec.collect()
    assert {s for (layer, s) in values if layer == "lin"} == set(GLOBAL_STATS)  # no spatial key at all
    assert all(math.isfinite(v) for v in values.values())


class MixedRanks(nn.Module):
    """(B, C, H, W) -> flattened (B, C, H*W) conv -> restored field -> pooled (B, C) -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        b, _, h, w = x.shape
        flat = self.conv(x.reshape(b, 2, h * w))
        field = flat.reshape(b, 3, h, w)
        return self.fc(self.pool(field).flatten(1)), field


def test_any_rank_layers_record_only_their_statistics_in_one_transfer(count_transfers, monkeypatch):
    model = MixedRanks()
    x = torch.rand(2, 2, 6, 5, generator=torch.Generator().manual_seed(0))
    with ActivationRecorder(model, ["conv", "pool", "fc", OUTPUT], layouts={"conv": (6, 5)}) as rec:
        with torch.no_grad():
            y, field = model(x)
    assert rec.shapes() == {"conv": (2, 3, 6, 5), "pool": (2, 3, 1, 1), "fc": (2, 4), OUTPUT: (2, 4)}
    assert rec.absent().keys() == {"fc", OUTPUT} and set(rec.absent()["fc"]) == set(SPATIAL_STATS)
    # the conv's (B, C, H*W) output is measured as the field it is, with its layout
    torch.testing.assert_close(rec.results()["conv"], activation_stats(field))
    assert rec.results()["conv"][IDX["low_freq_ratio"]] != activation_stats(field.flatten(2))[IDX["low_freq_ratio"]]
    calls = count_transfers()
    values = rec.collect()
    assert calls == {"cpu": 1, "item": 0, "tolist": 0}
    monkeypatch.undo()
    by_layer = {layer: {s for (lay, s) in values if lay == layer} for layer in rec.targets}
    assert by_layer == {
        "conv": set(ACTIVATION_STATS),
        "pool": set(ACTIVATION_STATS),
        "fc": set(GLOBAL_STATS),
        OUTPUT: set(GLOBAL_STATS),
    }
    assert values[("fc", "mean")] == pytest.approx(y.mean().item(), rel=1e-5)


def test_recorder_takes_a_target_plan_and_its_layouts():
    model = MixedRanks()
    plan = TargetPlan(["conv", OUTPUT], layouts={"conv": (6, 5), "gone": (1, 1)})
    rec = ActivationRecorder(model, plan)
    assert rec.targets == ["conv", OUTPUT] and rec.layouts == {"conv": (6, 5)}
    with rec:
        model(torch.rand(1, 2, 6, 5))
        model(torch.rand(1, 2, 4, 4))  # another resolution: N no longer fits the layout, measured as it is
    assert rec.shapes()["conv"] == (1, 3, 16)
    with pytest.raises(ValueError, match="unknown target"):
        ActivationRecorder(model, TargetPlan(["nope"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_recording_does_not_sync():
    model = HybridUNO(width=4, blocks=2, modes=4, size=16, block="stable").cuda()
    x = batch().cuda()
    model(x)
    torch.cuda.synchronize()
    with ActivationRecorder(model) as rec:
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(x)
            results, ratios = rec.results(), rec.branch_ratios()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert all(v.device.type == "cuda" for v in [*results.values(), *ratios.values()])
    values = rec.collect()
    assert values[(OUTPUT, "spatial_std")] > 0
