"""Tokens/s and MFU of the prune stage's training step on the BERT-Base shape, and its overhead over plain MLM training.

    python bench/gpu_prune_throughput.py [--shape base|tiny] [--batch-size 32] [--seq-len 128] [--precision bf16]
                                         [--steps 30] [--warmup 5] [--peak-tflops N] [--compile] [--against-fp32]
                                         [--json out.json]

Three students (four with --against-fp32) of one shape (random weights from a config: nothing is downloaded), each a full
optimizer step of the stage's own objective (`stages.lm.lm_objective`: deferred LM head, fused
CE+KD loss), with the loop's fast path (`train.performance`: TF32, fused AdamW on CUDA) under
autocast:

  mlm      plain masked-LM training: no masks, no teacher (the baseline)
  masked   the same with the pruning masks at 90% (`Pruner`), CE only: what masking itself costs
  prune    the prune stage's step: masks + KD from a frozen teacher of the same shape (α 0.5/0.5, T=2)
  prune-fp32  with --against-fp32: the same step without autocast, what --precision gains over fp32
              (on a CPU with AMX, `--shape minilm --precision bf16 --against-fp32` says what train.precision=bf16
              buys the offline default's prune step)

Steps alternate between the students, so machine noise hits all alike; medians after warm-up. A GMP
mask update is timed on its own and amortised at the paper's frequency (every 1000 steps).
MFU = model FLOPs per second / the device's peak (dense bf16: H100/H200 989 TFLOP/s, A100 312);
model FLOPs per token: 6 x (matmul weights + LM head) + 12 x layers x seq x hidden for a trained
model, a third of that for the teacher's forward. On a CPU, `--shape tiny` is a smoke run (no MFU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch
import transformers
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from pruneofa import Pruner
from pruneofa.bench.timing import report_result
from pruneofa.data.assets import asset_path
from pruneofa.distill import DistillConfig
from pruneofa.stages.lm import lm_objective
from pruneofa.train import performance

SHAPES = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
          "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
          "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense bf16


def train_flops_per_token(config: transformers.BertConfig, seq_len: int) -> float:
    h, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * h * h + 2 * h * config.intermediate_size) + h * h + h * config.vocab_size  # + MLM head
    return 6 * weights + 12 * layers * seq_len * h


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (the gpu recipes: 32 per GPU)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak (default: known GPUs by name)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the students (train.compile)")
    parser.add_argument("--against-fp32", action="store_true", help="also time the prune step without autocast")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    performance.allow_tf32(device)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(asset_path("offline/minilm-l6"))  # BERT's 30522-token vocabulary
    config = transformers.BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, args.seq_len),
                                     **SHAPES[args.shape])
    mlm = transformers.BertForMaskedLM(config).to(device).train()
    masked, student = copy.deepcopy(mlm), copy.deepcopy(mlm)
    student_fp32 = copy.deepcopy(mlm) if args.against_fp32 else None
    teacher = copy.deepcopy(mlm).eval().requires_grad_(False)
    pruners = [Pruner(m, target_sparsity=0.9, target_step=1000, frequency=1000)
               for m in (masked, student, student_fp32) if m is not None]
    for pruner in pruners:
        pruner.update_masks(0.9)
    if args.compile:
        for model in (mlm, masked, student):
            performance.compile_in_place(model)
    ce_only = lm_objective(DistillConfig(alpha_ce=1.0, alpha_kd=0.0), causal=False)
    with_kd = lm_objective(DistillConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0), causal=False)
    variants = {"mlm": (mlm, None, ce_only), "masked": (masked, None, ce_only), "prune": (student, teacher, with_kd)}
    if args.against_fp32:
        variants["prune-fp32"] = (student_fp32, teacher, with_kd)
    optimizers = {name: performance.adamw([{"params": list(m.parameters()), "weight_decay": 0.01}], 5e-5, device)
                  for name, (m, _, _) in variants.items()}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    ids = torch.randint(1000, 29000, (args.batch_size, args.seq_len))
    batch = {k: v.to(device) for k, v in collate([{"input_ids": row} for row in ids]).items()}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(name: str) -> float:
        model, frozen, objective = variants[name]
        sync()
        start = time.perf_counter()
        with autocast() if name != "prune-fp32" else contextlib.nullcontext():
            loss = objective(model, frozen, batch)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizers[name])
        scaler.update()
        optimizers[name].zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.steps):
        for name in variants:
            t = step(name)
            if i >= args.warmup:
                times[name].append(t)
    updates = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        pruners[1].update_masks(0.9)
        sync()
        updates.append(time.perf_counter() - start)

    tokens = args.batch_size * args.seq_len
    step_s = {name: statistics.median(t) for name, t in times.items()}
    flops = train_flops_per_token(config, args.seq_len) * tokens
    model_flops = {"mlm": flops, "masked": flops, "prune": flops * 4 / 3, "prune-fp32": flops * 4 / 3}  # + teacher
    peak = peak_tflops(device, args.peak_tflops)
    update_s = statistics.median(updates)
    paired = {name: statistics.median(a / b for a, b in zip(times[name], times["mlm"])) - 1
              for name in variants if name != "mlm"}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "shape": args.shape, "batch_size": args.batch_size, "seq_len": args.seq_len, "precision": args.precision,
        "compile": args.compile, "steps": args.steps, "peak_tflops": peak,
        "tokens_per_s": {name: tokens / s for name, s in step_s.items()},
        "mfu": {name: model_flops[name] / s / (peak * 1e12) for name, s in step_s.items()} if peak else None,
        "overhead_vs_mlm": paired,
        "mask_update_s": update_s, "mask_update_per_step_at_1000": update_s / 1000 / step_s["mlm"],
    }
    print(f"{result['device']}: BERT-{args.shape} shape, {args.batch_size} x {args.seq_len} tokens a step, "
          f"{args.precision}{', compiled' if args.compile else ''}, medians of {args.steps} steps")
    print("| step | tokens/s | MFU | vs plain MLM (median of paired ratios) |\n|---|---|---|---|")
    for name in variants:
        mfu = f"{result['mfu'][name]:.1%}" if peak else "n/a"
        vs = f"{paired[name]:+.1%}" if name in paired else "baseline"
        print(f"| {name} | {result['tokens_per_s'][name]:,.0f} | {mfu} | {vs} |")
    if args.against_fp32:
        result["prune_speedup_vs_fp32"] = statistics.median(
            a / b for a, b in zip(times["prune-fp32"], times["prune"]))
        print(f"prune step, {args.precision} autocast against fp32: {result['prune_speedup_vs_fp32']:.2f}x as fast "
              "(median of paired ratios)")
    print(f"one GMP mask update: {update_s * 1e3:.0f} ms = {result['mask_update_per_step_at_1000']:.4%} of a step at 1 per 1000")
    return report_result(result, args.json, print_json=False)


if __name__ == "__main__":
    main()
