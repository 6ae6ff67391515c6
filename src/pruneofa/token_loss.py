"""CE and KD over a language model's tokens, computed together a chunk of tokens at a time.

Both terms act on one vocabulary-sized row per token: at 16 x 128 tokens and a 30k vocabulary
every fp32 [tokens, vocab] tensor is 250 MB, and autograd would keep the log-softmaxes of student
and teacher and their gradients alive at that size. Here one autograd function computes

    ce_scale · Σ_labelled −log softmax(s)[y]  +  kd_scale · Σ_rows w · KL(softmax(t/T) ‖ softmax(s/T))

a chunk of rows at a time (`chunk_elements`: cache-sized on a CPU, sized from the free memory on a
GPU) and writes the gradient during the forward pass from its closed form

    ∂CE/∂s = softmax(s) − onehot(y)          ∂KL/∂s = (softmax(s/T) − softmax(t/T)) / T

so no vocabulary-sized temporary outlives its chunk. When the logits come from a linear output
layer (a `LogitSource` with a weight), even the logits are built one chunk at a time, and the
gradient kept until backward is that of the layer's input and parameters, not of the logits.

Computing the gradient in the forward pass costs nothing extra when the loss is backpropagated,
which is what training does; the function is not twice differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 22  # elements of one vocabulary-sized temporary on a CPU: 16 MiB in fp32, cache-sized
GPU_MAX_ELEMENTS = 1 << 28  # 1 GiB in fp32: past this a GPU is saturated and memory is better left to activations
LIVE_TEMPORARIES = 6  # fp32 [rows, vocab] tensors alive at once in `_chunk` (logits s and t, log-softmaxes, p_t, grad)
FREE_MEMORY_SHARE = 8  # the chunk's temporaries take at most 1/8 of the accelerator's free memory
IGNORE = -100  # the label of positions without a CE target (transformers' convention)


@dataclass(frozen=True)
class LogitSource:
    """Where logits come from: `values` are the logits themselves ([..., vocab], `weight` None), or
    the features entering a linear output layer ([..., hidden]) with its weight [vocab, hidden] and
    bias [vocab], the logits then being `features @ weight.T + bias`."""

    values: torch.Tensor
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    @property
    def vocab(self) -> int:
        return self.values.shape[-1] if self.weight is None else self.weight.shape[0]

    def flat(self) -> "LogitSource":
        return LogitSource(self.values.reshape(-1, self.values.shape[-1]), self.weight, self.bias)

    def select(self, rows: torch.Tensor) -> "LogitSource":
        return LogitSource(self.values[rows], self.weight, self.bias)

    def materialize(self) -> torch.Tensor:
        """All the logits at once, for code that needs them as one tensor."""
        return self.values if self.weight is None else F.linear(self.values.to(self.weight.dtype), self.weight, self.bias)

    def logits(self, rows: slice, dtype: torch.dtype) -> torch.Tensor:
        x = self.values[rows]
        if self.weight is None:
            return x.to(dtype)
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(dtype)


def chunk_elements(device_type: str, free_bytes: int | None) -> int:
    """Elements of one vocabulary-sized temporary, from the device and its free memory (pure).

    A CPU wants chunks that fit its caches (`CHUNK_ELEMENTS`); a GPU wants work large enough to
    fill it, as large as a share of its free memory allows, between the CPU size and
    `GPU_MAX_ELEMENTS`."""
    if device_type == "cpu" or free_bytes is None:
        return CHUNK_ELEMENTS
    budget = free_bytes // (FREE_MEMORY_SHARE * LIVE_TEMPORARIES * 4)
    return max(CHUNK_ELEMENTS, min(GPU_MAX_ELEMENTS, budget))


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device, counting what PyTorch's allocator holds unused (None elsewhere:
    a CPU's chunk does not depend on it)."""
    if device.type != "cuda":
        return None
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return torch.cuda.mem_get_info(device)[0] + cached


def chunk_rows(vocab: int, elements: int | None = None) -> int:
    return max(1, (CHUNK_ELEMENTS if elements is None else elements) // vocab)


def token_loss(student: LogitSource, teacher: LogitSource | None, targets: torch.Tensor,
               kd_weight: torch.Tensor | None, ce_scale: float | torch.Tensor, kd_scale: float | torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ce_scale · CE sum + kd_scale · KD sum, CE sum, KD sum); only the first is differentiable.

    `targets` (IGNORE where no CE) and `kd_weight` (how much each row's KL counts, e.g. the
    attention mask) have the leading shape of `student.values`. Only rows with a label or a non-zero
    KD weight are computed (with `teacher` None: only the labelled rows); the others get zero gradient.
    """
    student, targets = student.flat(), targets.reshape(-1)
    counted = targets != IGNORE  # the rows either term needs: the others are never computed
    if teacher is None:
        kd_weight = None
    else:
        teacher = teacher.flat()
        if teacher.vocab != student.vocab:
            raise ValueError(f"student and teacher vocabularies differ ({student.vocab} vs {teacher.vocab})")
        kd_weight = kd_weight.reshape(-1) if kd_weight is not None else None
        counted = counted | (kd_weight != 0) if kd_weight is not None else torch.ones_like(counted)
    rows = counted.nonzero().squeeze(1)
    if rows.numel() < targets.numel():
        student, targets = student.select(rows), targets[rows]
        teacher, kd_weight = (None, None) if teacher is None else (teacher.select(rows), kd_weight[rows])
    tensors = (student.values, student.weight, student.bias)
    with_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    t_values, t_weight, t_bias = (teacher.values, teacher.weight, teacher.bias) if teacher else (None, None, None)
    return _FusedTokenLoss.apply(*tensors, t_values, t_weight, t_bias, targets, kd_weight,
                                 (ce_scale, kd_scale, temperature), with_grad)


class _FusedTokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_values, s_weight, s_bias, t_values, t_weight, t_bias, targets, kd_weight, scales, with_grad):
        student = LogitSource(s_values, s_weight, s_bias)
        teacher = None if t_values is None else LogitSource(t_values, t_weight, t_bias)
        dtype = torch.float64 if s_values.dtype == torch.float64 else torch.float32
        grads = _Gradients(student, ctx.needs_input_grad[:3], dtype) if with_grad else None
        ce_sum, kd_sum = s_values.new_zeros((), dtype=dtype), s_values.new_zeros((), dtype=dtype)
        # the logits are computed in the output layer's own dtype, not autocast's (fp32 master weights)
        with torch.autocast(s_values.device.type, enabled=False):
            device = s_values.device
            step = chunk_rows(student.vocab, chunk_elements(device.type, free_memory(device)))
            for start in range(0, s_values.shape[0], step):
                rows = slice(start, start + step)
                ce, kd, grad = _chunk(student.logits(rows, dtype), None if teacher is None else teacher.logits(rows, dtype),
                                      targets[rows], None if kd_weight is None else kd_weight[rows].to(dtype),
                                      scales, with_grad)
                ce_sum += ce
                kd_sum += kd
                if grads is not None:
                    grads.add(rows, grad)
        ce_scale, kd_scale, _ = scales
        total = ce_scale * ce_sum + kd_scale * kd_sum
        ctx.grads = grads
        ctx.mark_non_differentiable(ce_sum, kd_sum)
        return total, ce_sum, kd_sum

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_kd):
        grads, ctx.grads = ctx.grads, None  # handed over, so that accumulation can take the buffers as they are
        values, weight, bias = grads.result(grad_total)
        return values, weight, bias, None, None, None, None, None, None, None


def _chunk(s: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor, w: torch.Tensor | None, scales: tuple,
           with_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """CE sum, weighted KL sum and the gradient of `ce_scale·CE + kd_scale·KL` for one chunk of logits."""
    ce_scale, kd_scale, temperature = scales
    kd, grad = s.new_zeros(()), None
    if t is not None:
        log_ps = F.log_softmax(s / temperature, -1)
        log_pt = F.log_softmax(t / temperature, -1)
        del t
        p_t = log_pt.exp()
        row_kl = log_pt.sub_(log_ps).mul_(p_t).sum(-1)  # in place: one temporary fewer
        del log_pt
        row_weight = torch.ones_like(row_kl) if w is None else w
        kd = (row_kl * row_weight).sum()
        if with_grad:
            grad = log_ps.exp_().sub_(p_t).mul_((row_weight * (kd_scale / temperature))[:, None])
        del log_ps, p_t
    labelled = (y != IGNORE).nonzero().squeeze(1)
    ce = s.new_zeros(())
    if labelled.numel():
        log_p = F.log_softmax(s[labelled], -1)
        y_labelled = y[labelled, None]
        ce = -log_p.gather(1, y_labelled).sum()
        if with_grad:
            grad_ce = log_p.exp_()
            grad_ce.scatter_add_(1, y_labelled, torch.full_like(y_labelled, -1, dtype=grad_ce.dtype))
            grad_ce.mul_(ce_scale)
            grad = torch.zeros_like(s) if grad is None else grad
            grad.index_add_(0, labelled, grad_ce)
    if with_grad and grad is None:
        grad = torch.zeros_like(s)
    return ce, kd, grad


class _Gradients:
    """Gradient buffers of a `LogitSource`'s tensors, filled one chunk of logit gradients at a time."""

    def __init__(self, source: LogitSource, needed: tuple[bool, bool, bool], dtype: torch.dtype):
        self.source, self.dtype = source, dtype
        values, weight, bias = source.values, source.weight, source.bias
        self.values = torch.empty_like(values) if needed[0] else None
        self.weight = torch.zeros_like(weight, dtype=dtype) if weight is not None and needed[1] else None
        self.bias = torch.zeros_like(bias, dtype=dtype) if bias is not None and needed[2] else None

    def add(self, rows: slice, grad_logits: torch.Tensor) -> None:
        src = self.source
        if src.weight is None:
            if self.values is not None:
                self.values[rows] = grad_logits
            return
        if self.values is not None:
            self.values[rows] = grad_logits.to(src.weight.dtype) @ src.weight
        if self.weight is not None:
            self.weight.addmm_(grad_logits.T, src.values[rows].to(self.dtype))
        if self.bias is not None:
            self.bias += grad_logits.sum(0)

    def result(self, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        out = []
        for buffer, like in ((self.values, self.source.values), (self.weight, self.source.weight),
                             (self.bias, self.source.bias)):
            out.append(None if buffer is None else buffer.mul_(grad_total.to(buffer.dtype)).to(like.dtype))
        return tuple(out)
