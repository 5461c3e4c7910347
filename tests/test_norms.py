"""fnodiag.diagnostics.norms: one norm implementation, complex tensors through their real view (no copy)."""

from __future__ import annotations

import torch
from torch import nn

from fnodiag.diagnostics import norms
from fnodiag.diagnostics.stats import grad_norms, weight_norms
from fnodiag.training.clipping import global_grad_norm


class _Spy:
    """Records what ``torch._foreach_norm`` is handed (dtype and storage of each tensor)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = torch._foreach_norm

        def spy(tensors, *args, **kwargs):
            self.calls.append([(t.dtype, t.data_ptr()) for t in tensors])
            return real(tensors, *args, **kwargs)

        monkeypatch.setattr(torch, "_foreach_norm", spy)


def _model():
    torch.manual_seed(0)
    m = nn.Module()
    m.lin = nn.Linear(3, 2)
    m.spec = nn.Module()
    m.spec.w = nn.Parameter(torch.randn(2, 3, 4, dtype=torch.complex64))
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    return m


def test_complex_tensors_reach_the_kernel_as_real_views_without_a_copy(monkeypatch):
    spy = _Spy(monkeypatch)
    w = torch.randn(5, 7, dtype=torch.complex64)
    r = torch.randn(4)
    out = norms.tensor_norms([w, r])
    assert spy.calls == [[(torch.float32, w.data_ptr()), (torch.float32, r.data_ptr())]]  # a view: same storage
    torch.testing.assert_close(out[0], torch.linalg.vector_norm(w))  # the complex reference kernel
    torch.testing.assert_close(out[1], torch.linalg.vector_norm(r))
    assert all(n.dtype == torch.float32 and n.ndim == 0 for n in out)


def test_clipping_and_layer_statistics_share_the_one_kernel(monkeypatch):
    m = _model()
    spy = _Spy(monkeypatch)
    total = global_grad_norm(list(m.parameters()))
    _, per_module = grad_norms(m)
    _, per_weight = weight_norms(m)
    assert len(spy.calls) == 3  # each of the three went through fnodiag.diagnostics.norms
    complex_grad = m.spec.w.grad.data_ptr()
    assert all((torch.float32, complex_grad) in call for call in spy.calls[:2])
    assert not any(dtype.is_complex for call in spy.calls for dtype, _ in call)
    reference = torch.sqrt(sum(torch.linalg.vector_norm(p.grad) ** 2 for p in m.parameters()))
    torch.testing.assert_close(total, reference)
    torch.testing.assert_close(torch.linalg.vector_norm(per_module), reference)


def test_global_norm_of_nothing_is_zero_and_low_precision_is_upcast():
    assert float(norms.global_norm([])) == 0.0
    h = torch.ones(4, dtype=torch.bfloat16)
    assert norms.tensor_norms([h])[0].item() == 2.0
    assert norms.real_view(h) is h
