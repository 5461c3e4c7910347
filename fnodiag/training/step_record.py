"""The per-step record: what one optimizer step produced, handed from the system to the recorder.

Lifecycle of one training step (automatic optimization), all on the system
(:class:`fnodiag.training.system.ReconstructionSystem`) except the last line:

1. ``on_train_batch_start``: ``system.step_record = StepRecord()`` (a fresh, empty record);
2. ``training_step``: ``loss`` (left None when the loss is non-finite and the step is skipped);
3. ``configure_gradient_clipping``: ``grad_norm_pre`` and ``grad_norm_post`` (the global gradient
   norm before and after clipping; equal when clipping is off);
4. the recorder's ``on_train_batch_end`` hands a :meth:`StepRecord.complete` record's tensors, as
   they are, to the run writer (:class:`fnodiag.runs.writer.RunWriter`), which brings the buffered
   steps to the host in one transfer per flush (every N steps, at a capture, at epoch end).

The values stay device tensors until then, so a step never synchronises with the host for them.
:meth:`StepRecord.to_host` reads one record at once (one transfer), for tests and one-off use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FIELDS = ("loss", "grad_norm_pre", "grad_norm_post")


@dataclass
class StepRecord:
    """One optimizer step's scalars as ``()`` device tensors (None until the step produced them).

    Attributes
    ----------
    loss : () float tensor or None
        The training loss of the step (detached).
    grad_norm_pre, grad_norm_post : () float tensor or None
        Global L2 norm of all gradients before and after clipping.
    """

    loss: torch.Tensor | None = None
    grad_norm_pre: torch.Tensor | None = None
    grad_norm_post: torch.Tensor | None = None

    def complete(self) -> bool:
        """True when the step trained (a loss) and its gradient norms were recorded."""
        return all(getattr(self, name) is not None for name in FIELDS)

    def to_host(self) -> tuple[float, float, float]:
        """``(loss, grad_norm_pre, grad_norm_post)`` as Python floats, in one transfer."""
        if not self.complete():
            missing = [name for name in FIELDS if getattr(self, name) is None]
            raise ValueError(f"step record is missing {', '.join(missing)}; read it only when complete()")
        device = self.loss.device
        return tuple(torch.stack([getattr(self, name).float().reshape(()).to(device) for name in FIELDS]).tolist())
