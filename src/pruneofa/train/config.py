"""`TrainConfig`: the recipe's `train:` section, shared by every training stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pruneofa.config.base import StrictModel
from pruneofa.train.schedules import constant_lr, linear_warmup_decay, rewinding_lr


class TrainConfig(StrictModel):
    max_steps: int = Field(1000, ge=1, description="optimizer updates")
    batch_size: int = Field(32, ge=1, description="global batch per update, split over processes and grad_accum")
    grad_accum: int = Field(1, ge=1, description="micro-batches per update on each process")
    per_device_batch: int | None = Field(
        None, ge=1, description="examples per micro-batch on each process; when set, grad_accum follows from it: "
        "batch_size / (processes x per_device_batch), so one recipe keeps its global batch on 1 or 8 GPUs")
    group_by_length: bool = Field(
        False, description="batches of examples of similar length (task stages): less padding, the same examples "
        "per epoch; see train.sampling.batch_indices")
    length_group_batches: int = Field(16, ge=2, description="group_by_length: batches per group sorted by length")
    seq_len: int = Field(128, ge=16)
    lr: float = Field(5e-5, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["linear", "rewind", "constant"] = Field(
        "linear", description="rewind: held at peak until pruning.target_step, then linear to 0")
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16/fp16: autocast over fp32 master weights (fp16 adds a gradient scaler; GPU only)")
    cpu_dropout: Literal["torch", "packed"] = Field(
        "torch", description="torch: torch's own dropout kernels; packed: on a CPU, masks drawn four elements per "
        "64-bit random word, and attention dropout outside SDPA's math fallback (pruneofa.train.cpu_dropout; the "
        "offline task recipes set it). GPUs always use torch's")
    compile: bool = Field(False, description="torch.compile the model (opt-in: compiling costs minutes, pays on GPUs)")
    sharding: Literal["none", "fsdp"] = Field(
        "none", description="fsdp: FSDP2 (fully_shard) shards weights, gradients and AdamW state over the processes; "
        "none: every process holds the whole model (DDP)")
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    save_every: int = Field(0, ge=0, description="checkpoint every N updates (0: only at the end and on stop)")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(0, ge=0, description="evaluate every N updates (0: only at the end)")
    eval_batches: int = Field(20, ge=1, description="cap on validation batches per evaluation")

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainConfig":
        if self.warmup_steps >= self.max_steps and self.lr_schedule != "constant":
            raise ValueError(f"train.warmup_steps ({self.warmup_steps}) must be below train.max_steps ({self.max_steps})")
        if self.sharding == "fsdp" and self.precision == "fp16":
            raise ValueError("train.sharding=fsdp takes train.precision=bf16 or fp32 (fp16's gradient scaler "
                             "does not handle sharded gradients)")
        if self.per_device_batch is not None and self.grad_accum != 1:
            raise ValueError("set one of train.grad_accum and train.per_device_batch (the other follows from it)")
        return self

    def micro_batching(self, processes: int) -> tuple[int, int] | None:
        """(examples per micro-batch on each process, micro-batches per update), or None when
        `batch_size` does not split that way over `processes`."""
        if self.per_device_batch is not None:
            accum, rem = divmod(self.batch_size, processes * self.per_device_batch)
            return (self.per_device_batch, accum) if accum and not rem else None
        micro, rem = divmod(self.batch_size, processes * self.grad_accum)
        return (micro, self.grad_accum) if micro and not rem else None

    def eval_batch_size(self) -> int:
        """Examples per evaluation batch: one training micro-batch of a single process."""
        return self.per_device_batch or max(1, self.batch_size // self.grad_accum)

    def lr_at(self, step: int, hold_until: int | None = None) -> float:
        """Learning rate for update index `step` (0-based) under `lr_schedule`.

        `hold_until` is the end of the pruning window for `rewind` (pruning.target_step).
        """
        if self.lr_schedule == "constant":
            return constant_lr(step, self.lr, self.warmup_steps)
        if self.lr_schedule == "rewind":
            return rewinding_lr(step, self.lr, self.warmup_steps, hold_until or self.warmup_steps, self.max_steps)
        return linear_warmup_decay(step, self.lr, self.warmup_steps, self.max_steps)
