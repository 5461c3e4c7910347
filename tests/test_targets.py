"""Tests of fnodiag.diagnostics.targets: the traced rule on small torch models, the cap, the U-NO path."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fnodiag.config import ModelConfig
from fnodiag.diagnostics.hooks import ActivationRecorder
from fnodiag.diagnostics.stats import SPATIAL_STATS
from fnodiag.diagnostics.targets import (
    OUTPUT,
    RULE_GIVEN,
    RULE_UNO,
    ProbeError,
    TargetPlan,
    choose_targets,
    default_targets,
    static_targets,
    traced_targets,
)
from fnodiag.models import build_model


class WeightHolder(nn.Module):
    """A parameter in a module that is never called (like a factorized tensor weight)."""

    def __init__(self, c):
        super().__init__()
        self.tensor = nn.Parameter(torch.randn(c, c) / c)


class Operator(nn.Module):
    """Mixes channels with the weight of a child it never calls; no parameter of its own."""

    def __init__(self, c):
        super().__init__()
        self.weight = WeightHolder(c)

    def forward(self, x):
        return torch.einsum("oi,bi...->bo...", self.weight.tensor, x)


class PointwiseMLP(nn.Module):
    """Flattens the field's spatial axes for two Conv1d and restores them (neuraloperator's ChannelMLP)."""

    def __init__(self, c_in, c_out, hidden):
        super().__init__()
        self.fcs = nn.ModuleList([nn.Conv1d(c_in, hidden, 1), nn.Conv1d(hidden, c_out, 1)])

    def forward(self, x):
        b, _, *size = x.shape
        x = x.reshape(b, x.shape[1], -1)
        x = self.fcs[1](torch.relu(self.fcs[0](x)))
        return x.reshape(b, x.shape[1], *size)


class Shared(nn.Module):
    """Calls one child twice (neuraloperator's ComplexValued calls ``fr`` on real and imaginary parts)."""

    def __init__(self, c):
        super().__init__()
        self.inner = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.inner(x) + self.inner(x.flip(-1))


class Net(nn.Module):
    """lift (flattened MLP) -> operator -> shared -> act -> dropout -> head (B, C) after pooling."""

    def __init__(self, c=4):
        super().__init__()
        self.head = nn.Linear(c, 2)  # registered first: forward order is not registration order
        self.lift = PointwiseMLP(1, c, 6)
        self.blocks = nn.ModuleList([Operator(c), Shared(c)])
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.5)
        self.norm = nn.BatchNorm2d(c)

    def forward(self, x):
        h = self.lift(x)
        for block in self.blocks:
            h = self.act(block(h))
        h = self.drop(self.norm(h))
        return self.head(h.mean(dim=(-2, -1)))


def probe(seed=0):
    return torch.rand(2, 1, 6, 5, generator=torch.Generator().manual_seed(seed))


def test_traced_targets_forward_order_operators_merges_and_layouts():
    plan = traced_targets(Net(), probe())
    assert plan.targets == [
        "lift.fcs.0",  # hidden layer, (B, 6, 30) viewed as (B, 6, 6, 5)
        "lift",  # lift.fcs.1's output, restored to a field by lift
        "blocks.0",  # operator: its weight module is never called
        "blocks.1",  # its child runs twice: recorded through it
        "norm",
        "drop",
        "head",
        OUTPUT,
    ]
    assert plan.merged == {"lift.fcs.1": "lift", "blocks.1.inner": "blocks.1"}
    assert plan.layouts == {"lift.fcs.0": (6, 5)}
    assert plan.shapes["lift.fcs.0"] == (2, 6, 6, 5) and plan.shapes["head"] == (2, 2)
    assert plan.left_out == {"act": "called 2 times in one forward pass and no module around it runs once"}
    absent = plan.absent()
    assert set(absent) == {"head", OUTPUT} and all(set(a) == set(SPATIAL_STATS) for a in absent.values())
    assert "(BATCH, C)" in absent["head"]["spatial_std"]
    assert plan.stats()["blocks.0"] == plan.stats()["lift"] and "low_freq_ratio" in plan.stats()["lift"]
    record = json.loads(json.dumps(plan.describe()))
    assert record["targets"] == plan.targets and record["layouts"] == {"lift.fcs.0": [6, 5]}
    assert record["rule"].startswith("traced") and set(record["absent"]) == {"head", OUTPUT}


def test_traced_plan_recorded_with_all_finite_statistics_and_no_spatial_stat_for_b_c():
    model = Net()
    plan = choose_targets(model, probe())
    with ActivationRecorder(model, plan) as rec, torch.no_grad():
        model.eval()
        model(probe())
    values = rec.collect()
    assert list(dict.fromkeys(layer for layer, _ in values)) == plan.targets
    assert all(v == v for v in values.values())  # no NaN
    assert not [s for (layer, s) in values if layer in ("head", OUTPUT) and s in SPATIAL_STATS]


def test_trace_leaves_the_model_as_it_was():
    model = Net().train()
    model.blocks[0].eval()  # a deliberately mixed mode survives
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    traced_targets(model, probe())
    assert torch.equal(torch.rand(3), expected)  # dropout in train mode would have drawn numbers
    assert model.training and not model.blocks[0].training and model.norm.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_probe_the_model_refuses_is_a_one_line_probe_error_and_leaves_no_hooks():
    model = Net()
    with pytest.raises(ProbeError, match=r"^fnodiag could not run the model on the probe .*pass a probe") as info:
        choose_targets(model, torch.rand(2, 3, 6, 5))
    assert "\n" not in str(info.value) and isinstance(info.value.__cause__, RuntimeError)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


class Deep(nn.Module):
    """``n`` operators, each followed by a parameter-free activation and a pointwise conv."""

    def __init__(self, n, c=2):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(n):
            self.layers.extend([Operator(c), nn.Tanh(), nn.Conv2d(c, c, 1)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_cap_keeps_operators_first_then_spreads_the_overflowing_class():
    model = Deep(5)
    x = torch.rand(1, 2, 4, 4)
    full = traced_targets(model, x)
    assert len(full.targets) == 16 and full.left_out == {}
    plan = traced_targets(model, x, max_targets=9)  # output + 5 operators + 3 of the 5 parametric convs
    ops = [f"layers.{3 * i}" for i in range(5)]
    convs = [f"layers.{3 * i + 2}" for i in range(5)]
    assert plan.targets == sorted([*ops, convs[0], convs[2], convs[4]], key=full.targets.index) + [OUTPUT]
    assert set(plan.left_out) == {convs[1], convs[3], *(f"layers.{3 * i + 1}" for i in range(5))}
    assert plan.left_out[convs[1]] == "over the cap of 9 targets (parametric leaf)"
    assert plan.left_out["layers.1"].endswith("(parameter-free leaf)")
    small = traced_targets(model, x, max_targets=3)  # two operators, first and last
    assert small.targets == ["layers.0", "layers.12", OUTPUT]
    assert traced_targets(model, x, max_targets=1).targets == [OUTPUT]
    with pytest.raises(ValueError, match="max_targets"):
        traced_targets(model, x, max_targets=0)


def test_repeated_module_without_an_enclosing_single_call_is_left_out():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.step = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            for _ in range(3):
                x = self.step(x)
            return x, "meta"

    plan = traced_targets(Loop(), torch.rand(1, 2, 4, 4))
    assert plan.targets == [OUTPUT] and "called 3 times" in plan.left_out["step"]


def test_fnodiag_uno_keeps_its_default_targets_with_or_without_probe():
    model = build_model(ModelConfig(arch="stable_hybrid", blocks=2, width=4, modes=4), 16)
    for p in (None, torch.rand(2, 1, 16, 16)):
        plan = choose_targets(model, p)
        assert plan.targets == default_targets(model) and plan.rule == RULE_UNO and plan.left_out == {}
    # the traced rule also finds fnodiag's own spectral convolutions (ParameterList weights, never called)
    traced = traced_targets(model, torch.rand(2, 1, 16, 16))
    assert {"encoder.0.spectral", "encoder.1.spectral", "bottleneck.spectral"} <= set(traced.targets)


def test_given_targets_are_checked_and_kept_and_static_fallback_without_probe():
    model = Net()
    assert choose_targets(model, None, ["head", "lift", "head", OUTPUT]) == TargetPlan(["head", "lift", OUTPUT])
    plan = choose_targets(model, probe(), ["lift.fcs.1", "head"])  # with a probe: traced for layouts and shapes
    assert plan.targets == ["lift.fcs.1", "head"] and plan.rule == RULE_GIVEN and plan.left_out == {}
    assert plan.layouts == {"lift.fcs.1": (6, 5)} and plan.shapes == {"lift.fcs.1": (2, 4, 6, 5), "head": (2, 2)}
    with pytest.raises(ValueError, match=r"unknown target\(s\) 'nope'"):
        choose_targets(model, None, ["nope"])
    static = choose_targets(model)  # registration order: no forward pass to order by
    assert static.targets == [
        "head",
        "lift.fcs.0",
        "lift.fcs.1",
        "blocks.0.weight",
        "blocks.1.inner",
        "act",
        "drop",
        "norm",
        OUTPUT,
    ]
    assert static.rule.startswith("static") and static_targets(model, max_targets=3).left_out.keys() == set(
        static.targets[2:-1]
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices on importing dynamo
def test_compiled_model_refused():
    with pytest.raises(ValueError, match=r"model._orig_mod"):
        choose_targets(torch.compile(Net()), probe())
