"""The one training loop every stage runs (teacher, prune, finetune, transfer, quantize).

Built on accelerate, so the same code runs on one CPU, under `torchrun` / `accelerate launch`
(DDP: gloo on CPU, NCCL on GPU) and with mixed precision. What is special here:

- the data order is a pure function of (seed, step) (`sampling.batch_indices`, optionally grouped by
  length), so resuming needs no data-loader state and every process agrees on the global batch;
- `train.batch_size` is the *global* batch per update: each of W processes takes B / W examples in
  `grad_accum` micro-batches, so the effective batch and the LR schedule do not change with W;
- the pruner steps right after the optimizer, on every process, and broadcasts rank 0's masks
  (the masks are also broadcast from rank 0 once at the start, and every checkpoint records each
  rank's mask hash in `masks-rankR.sha256`; the commit fails loudly if they ever differ);
- only the main process writes (TensorBoard, history, checkpoints); the others wait at barriers;
- checkpoints are atomic and hold everything an exact resume needs (see `checkpoint`); leftovers of
  a crashed write are removed when the run starts.

Several processes run DDP by default, or FSDP2 with `train.sharding=fsdp` (`train.sharding`: the
loop trains a sharded copy and loads the result back into the job's model at the end).
accelerate's own FSDP, DeepSpeed and Megatron launches are refused with a clear error (see
docs/distributed.md).

(Over 300 lines on purpose: the one loop is kept whole, so the order of its operations, which
exact resume and the mask broadcast depend on, reads in one place; what does not depend on that order
lives beside it: `checkpoint`, `distributed`, `sharding`, `performance`, `signals`.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from pruneofa.errors import UserError
from pruneofa.sparsity import masks as M
from pruneofa.sparsity.pruner import Pruner
from pruneofa.train import checkpoint as C
from pruneofa.train import distributed as D
from pruneofa.train import performance as P
from pruneofa.train.config import TrainConfig
from pruneofa.train.cpu_dropout import use_packed_dropout
from pruneofa.train.progress import Throughput
from pruneofa.train.sampling import rank_indices
from pruneofa.train.signals import GracefulStop

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved at `step`."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        super().__init__(f"stopped at step {step}")


@dataclass
class TrainingJob:
    """Everything stage-specific the loop needs; the loop itself knows no objective."""

    model: torch.nn.Module
    n_examples: int
    make_batch: Callable[[list[int]], Batch]
    compute_loss: Callable[[torch.nn.Module, torch.nn.Module | None, Batch], dict[str, torch.Tensor]]
    lr_at: Callable[[int], float]
    config: TrainConfig
    output_dir: Path
    seed: int = 42
    teacher: torch.nn.Module | None = None
    pruner: Pruner | None = None
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    resume: bool = False
    description: str = "train"
    extra_logs: Callable[[int], dict[str, float]] | None = None
    lengths: Sequence[int] | None = None  # tokens per example, for train.group_by_length


@dataclass
class FitResult:
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0  # non-padding input tokens the model trained on, over every process and micro-batch


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # no decay on biases and norms, as BERT and HF do
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Run:
    """State of one `fit` call; split out so the loop body reads top to bottom."""

    def __init__(self, job: TrainingJob):
        self.job, cfg = job, job.config
        if cfg.precision == "fp16" and not torch.cuda.is_available():
            raise UserError("train.precision=fp16 needs a GPU", "use train.precision=bf16 or fp32 on CPU")
        D.refuse_sharded_launch()
        self.acc = D.make_accelerator("no" if cfg.precision == "fp32" else cfg.precision)
        D.check_distributed_type(self.acc)
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        split = cfg.micro_batching(self.world)
        if split is None:
            per = (f"train.per_device_batch={cfg.per_device_batch}" if cfg.per_device_batch
                   else f"{cfg.grad_accum} micro-batches")
            raise UserError(f"train.batch_size={cfg.batch_size} does not split over {self.world} processes x {per}",
                            "make it a multiple of processes x train.grad_accum (or x train.per_device_batch)")
        if cfg.group_by_length and job.lengths is None:
            raise UserError("train.group_by_length is set, but this stage's examples are all one length "
                            "(packed blocks)", "remove train.group_by_length from the recipe")
        if job.n_examples < cfg.batch_size:
            raise UserError(f"only {job.n_examples} training examples for train.batch_size={cfg.batch_size}",
                            "add data or lower train.batch_size")
        self.micro, self.accum = split
        self.out = Path(job.output_dir)
        self.main = self.acc.is_main_process
        torch.manual_seed(job.seed + self.rank)
        P.allow_tf32(self.acc.device)
        self.model = job.model.train()  # from_pretrained returns eval mode: no dropout, QAT observers idle
        if cfg.cpu_dropout == "packed" and self.acc.device.type == "cpu":
            use_packed_dropout(self.model)
        self.sharded = cfg.sharding == "fsdp" and self.world > 1  # one process has nothing to shard
        if self.sharded:
            self.model = self._shard()
        if cfg.compile:
            P.compile_in_place(self.model)
        self.names = {id(p): n for n, p in self.model.named_parameters()}
        if not self.sharded:
            self.model.to(self.acc.device)  # before the optimizer is built: fused AdamW wants its parameters there
        self.raw_optimizer = P.adamw(_param_groups(self.model, cfg.weight_decay), cfg.lr, self.acc.device)
        if self.sharded:  # FSDP2 is the wrapper; accelerate only steps the optimizer (and its autocast)
            self.ddp_model, self.optimizer = self.model, self.acc.prepare(self.raw_optimizer)
        else:
            self.ddp_model, self.optimizer = self.acc.prepare(self.model, self.raw_optimizer)
        self.start_step = 0
        self.tokens = 0  # this process's share; `global_tokens` adds up every process's
        self.history: list[dict[str, Any]] = []
        if self.main:  # a write killed half-way leaves step-N.tmp/ or .trash-*: never used, removed here
            for leftover in C.clean_partial(self.out):
                log.info("removed %s left by an interrupted checkpoint write", leftover)
        self.acc.wait_for_everyone()
        if job.resume and (ckpt := C.latest_checkpoint(self.out)) is not None:
            self._restore(ckpt)
        self._broadcast_masks()
        if job.teacher is not None:
            job.teacher.to(self.acc.device).eval().requires_grad_(False)

    def _shard(self) -> torch.nn.Module:
        """The sharded copy of the job's model that this run trains (FSDP2), the pruner bound to it."""
        from pruneofa.train import sharding

        job = self.job
        model = sharding.sharded_copy(job.model)
        if job.pruner is not None:
            job.pruner.bind(model)
        return model

    def hand_back(self) -> None:
        """After training a sharded copy: the job's own model takes its state (every process), and
        the pruner its layers, so that the stage continues with a plain model."""
        if not self.sharded:
            return
        from pruneofa.train import sharding

        sharding.copy_back(self.model, self.job.model)
        if self.job.pruner is not None:
            self.job.pruner.bind(self.job.model)

    # --- checkpoints --------------------------------------------------------------------------
    def save(self, step: int) -> Path | None:
        """Write checkpoint `step` atomically; every process must call it. Returns its path (main only)."""
        job, acc = self.job, self.acc
        tokens = self.global_tokens()
        tmp = C.checkpoint_root(self.out) / f"step-{step}.tmp"
        if self.main:
            C.begin_checkpoint(self.out, step)
        acc.wait_for_everyone()  # the folder exists before anyone writes into it
        C.save_tensors(tmp / f"rng-{self.rank}.safetensors", {"torch": torch.get_rng_state()})
        if job.pruner is not None and job.pruner.layers:
            C.atomic_write_text(tmp / f"masks-rank{self.rank}.sha256", C.mask_digest(job.pruner.masks()) + "\n")
        acc.wait_for_everyone()  # every rank's files are in before the main process seals the folder
        C.check_mask_digests(tmp)  # on every rank, so that all of them stop if the masks ever diverged
        final = None
        if self.sharded:  # gathered on rank 0 (collectives: every process takes part)
            from pruneofa.train import sharding

            folded = M.fold_state_dict(sharding.full_state_on_rank0(self.model))
            tensors, meta = sharding.full_optimizer_tensors(self.model, self.raw_optimizer)
        if self.main:
            if self.sharded:
                job.model.save_pretrained(tmp, state_dict=folded)
            else:
                self.model.save_pretrained(tmp, state_dict=M.plain_state_dict(self.model))
                tensors, meta = C.optimizer_tensors(self.raw_optimizer, self.names)
            if job.pruner is not None and job.pruner.layers:
                C.save_tensors(tmp / "masks.safetensors", job.pruner.masks())
            C.save_tensors(tmp / "optimizer.safetensors", tensors)
            C.atomic_write_text(tmp / "optimizer.json", json.dumps(meta))
            C.atomic_write_text(tmp / "history.json", json.dumps(self.history))
            final = C.commit_checkpoint(tmp, {"step": step, "world_size": self.world, "tokens": tokens},
                                        job.config.keep_checkpoints)
        acc.wait_for_everyone()
        return final

    def _broadcast_masks(self) -> None:
        """Start from rank 0's masks on every process (they are computed before the process group exists)."""
        pruner = self.job.pruner
        if self.world == 1 or pruner is None or not pruner.layers:
            return
        for module in pruner.layers.values():
            mask = M.get_mask(module)
            bits = mask.to(torch.uint8)
            torch.distributed.broadcast(bits, src=0)
            mask.copy_(bits.bool())

    def _restore(self, ckpt: Path) -> None:
        state = C.read_state(ckpt)
        if state.get("world_size", 1) != self.world:
            log.warning("resuming a %s-process run on %s processes: RNG streams differ", state.get("world_size"), self.world)
        C.load_model_state(self.model, C.load_tensors(ckpt / "model.safetensors"), self.sharded)
        if self.job.pruner is not None and (ckpt / "masks.safetensors").exists():
            self.job.pruner.load_masks(C.load_tensors(ckpt / "masks.safetensors"))
        meta = C.read_json(ckpt / "optimizer.json")
        optimizer_state = C.load_tensors(ckpt / "optimizer.safetensors")
        if self.sharded:
            from pruneofa.train import sharding

            sharding.load_full_optimizer(self.model, self.raw_optimizer, optimizer_state, meta)
        else:
            C.load_optimizer_tensors(self.raw_optimizer, self.names, optimizer_state, meta)
        rng_file = ckpt / f"rng-{self.rank}.safetensors"
        if rng_file.exists():
            torch.set_rng_state(C.load_tensors(rng_file)["torch"])
        self.history = C.read_json(ckpt / "history.json") if (ckpt / "history.json").exists() else []
        self.start_step = int(state["step"])
        self.tokens = int(state.get("tokens", 0)) // self.world
        if self.main:
            log.info("resumed from %s (step %d)", ckpt, self.start_step)

    # --- one update ---------------------------------------------------------------------------
    def update(self, step: int) -> dict[str, float]:
        job, cfg = self.job, self.job.config
        lr = job.lr_at(step - 1)
        for group in self.raw_optimizer.param_groups:
            group["lr"] = lr
        lengths = job.lengths if cfg.group_by_length else None
        mine = rank_indices(step, job.n_examples, cfg.batch_size, job.seed, self.rank, self.world,
                            lengths, cfg.length_group_batches)
        totals: dict[str, float] = {}
        for k in range(self.accum):
            batch = {n: t.to(self.acc.device) for n, t in job.make_batch(mine[k * self.micro:(k + 1) * self.micro]).items()}
            mask = batch.get("attention_mask")
            self.tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            with self._sync(last=k == self.accum - 1):
                parts = job.compute_loss(self.ddp_model, job.teacher, batch)
                if not torch.isfinite(parts["loss"]):
                    raise FloatingPointError(f"loss is {parts['loss'].item()} at step {step}; lower train.lr")
                self.acc.backward(parts["loss"] / self.accum)
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value.item() / self.accum
        if cfg.max_grad_norm:
            self.acc.clip_grad_norm_(self.ddp_model.parameters(), cfg.max_grad_norm)
        if job.pruner is not None:
            job.pruner.observe_gradients(step)  # criterion obs: the (reduced, clipped) gradients of this update
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if job.pruner is not None:
            job.pruner.step(step)
        totals["lr"] = lr
        return totals

    @contextlib.contextmanager
    def _sync(self, last: bool):
        """Gradients are reduced over the processes on the last micro-batch of an update only; under
        FSDP2 the forward also runs in accelerate's autocast (the model is not accelerate's to wrap)."""
        if not self.sharded:
            with contextlib.nullcontext() if last else self.acc.no_sync(self.ddp_model):
                yield
            return
        from pruneofa.train import sharding

        sharding.gradient_sync(self.model, last)
        with self.acc.autocast():
            yield

    def global_tokens(self) -> int:
        if self.world == 1:
            return self.tokens
        return int(self.acc.reduce(torch.tensor([self.tokens], device=self.acc.device), reduction="sum").item())

    def reduce(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return values
        keys = sorted(values)
        t = self.acc.reduce(torch.tensor([values[k] for k in keys], device=self.acc.device), reduction="mean")
        return dict(zip(keys, t.tolist()))

    def stop_agreed(self, requested: bool) -> bool:
        if self.world == 1:
            return requested
        flag = self.acc.reduce(torch.tensor([float(requested)], device=self.acc.device), reduction="sum")
        return bool(flag.item() > 0)


def fit(job: TrainingJob) -> FitResult:
    """Train `job.model` in place for `job.config.max_steps` updates (continuing a checkpoint if asked)."""
    run = _Run(job)
    cfg = job.config
    writer = None
    if run.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run.out / "logs"), purge_step=run.start_step + 1)
    bar = tqdm(total=cfg.max_steps, initial=run.start_step, desc=job.description, disable=not run.main,
               unit="step", dynamic_ncols=True)
    step = run.start_step
    throughput = Throughput(run.start_step, cfg.max_steps, run.global_tokens())
    try:
        with GracefulStop() as stopper:
            for step in range(run.start_step + 1, cfg.max_steps + 1):
                values = run.update(step)
                if job.pruner is not None and job.pruner.layers:
                    values["sparsity"] = job.pruner.overall_sparsity()
                if job.extra_logs:
                    values.update(job.extra_logs(step))
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    values = run.reduce(values)
                    run.history.append({"step": step, **values})
                    speed = throughput.measure(step, run.global_tokens())  # kept out of the history: not reproducible
                    shown = ("loss", "kd", "sentence", "cls", "sparsity", "lr")
                    bar.set_postfix({**{k: f"{v:.3g}" for k, v in values.items() if k in shown},
                                     "tok/s": f"{speed['tokens_per_s']:,.0f}"})
                    if writer:
                        for k, v in values.items():
                            writer.add_scalar(f"train/{k}", v, step)
                        for k, v in speed.items():
                            writer.add_scalar(f"progress/{k}", v, step)
                if job.evaluate and cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
                    _evaluate(run, writer, step)
                if run.stop_agreed(stopper.requested):
                    raise StopRequested(step, run.save(step))
                if cfg.save_every and step % cfg.save_every == 0:
                    run.save(step)
        metrics = _evaluate(run, writer, step) if job.evaluate else {}
        if not (cfg.save_every and step % cfg.save_every == 0):
            run.save(step)
        run.hand_back()
    finally:
        bar.close()
        if writer:
            writer.close()
    return FitResult(step=step, metrics=metrics, history=run.history, tokens=run.global_tokens())


def _evaluate(run: _Run, writer: Any, step: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if run.main or run.sharded:  # a sharded model's forward needs every process (each computes the same)
        was_training = run.model.training
        run.model.eval()
        with torch.no_grad(), run.acc.autocast() if run.sharded else contextlib.nullcontext():
            metrics = run.job.evaluate(run.model)
        run.model.train(was_training)
    if run.main:
        run.history.append({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
        if writer:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(f"eval/{k}", v, step)
    run.acc.wait_for_everyone()
    return metrics
