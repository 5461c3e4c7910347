"""The explicit per-step record the system fills and the recorder reads (no hidden dict hand-over)."""

from __future__ import annotations

import pytest
import torch

from fnodiag.training.step_record import StepRecord
from fnodiag.training.system import ReconstructionSystem


def test_a_record_is_read_only_when_the_step_filled_it():
    record = StepRecord(loss=torch.tensor(0.5))
    assert not record.complete()
    with pytest.raises(ValueError, match="missing grad_norm_pre, grad_norm_post"):
        record.to_host()
    record.grad_norm_pre, record.grad_norm_post = torch.tensor(2.0), torch.tensor(1.0, dtype=torch.float64)
    assert record.complete() and record.to_host() == (0.5, 2.0, 1.0)


def test_the_system_starts_each_step_with_an_empty_record_and_fills_it(tiny_cfg):
    n = tiny_cfg.data.N
    system = ReconstructionSystem(tiny_cfg.to_dict(), probe=torch.ones(n, n, dtype=torch.complex64))
    system.step_record.loss = torch.tensor(1.0)  # left over from an earlier step
    system.on_train_batch_start(None, 0)
    assert system.step_record == StepRecord()
    x = torch.rand(2, 1, tiny_cfg.data.N, tiny_cfg.data.N)
    loss = system.physics_loss(x)
    system.step_record.loss = loss.detach()
    loss.backward()
    system.configure_gradient_clipping(None)  # clipping off: pre == post, the global gradient norm
    loss_value, pre, post = system.step_record.to_host()
    assert loss_value == pytest.approx(float(loss)) and pre == post > 0
    grads = [p.grad for p in system.parameters() if p.grad is not None]
    assert pre == pytest.approx(float(torch.sqrt(sum(torch.linalg.vector_norm(g) ** 2 for g in grads))), rel=1e-5)
