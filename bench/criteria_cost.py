"""Cost of one mask update by pruning criterion: OBS (Fisher inverse from m gradients, scores, and
optionally the OBS weight update) against magnitude, on all the encoder Linear layers of a shape.

    .venv/bin/python bench/criteria_cost.py --threads 2 [--shapes 6x384,bert-base] [--block-size 32]
        [--num-grads 16,64] [--measure-layers bert-base=2] [--device cpu|cuda] [--json out.json]

Shapes: `6x384` (6 layers, hidden 384, FFN 1536) and `bert-base` (12 layers, 768, 3072); every layer
holds Q, K, V, attention output (hidden x hidden), FFN in (FFN x hidden) and FFN out (hidden x FFN),
with random weights and random gradients (scale 1e-3). Each configuration runs in a fresh process:
the real `Pruner` (one-shot to 90%, layer scope, unstructured) is fed m gradients through
`observe_gradients` (its cost per training step is reported too), the gradients are dropped (the
loop's zero_grad) and one `pruner.step` is timed.

Peak memory is the extra over what the process held just before the update (the model and, for
obs, its gradient buffer): on CPU VmHWM - VmRSS after resetting VmHWM (/proc/self/clear_refs), on
CUDA max_memory_allocated - memory_allocated. The buffer itself (m x prunable weights x 4 bytes,
held during the m steps before each update) is reported apart.

`--measure-layers bert-base=2` builds only 2 of the 12 layers and scales the update and observe
times by 12/2 (every layer costs the same, as layers are scored one at a time); the peak extra is
then measured on those layers (it is per layer, so it holds for 12 too), and the buffer is computed
for all 12.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

SHAPES = {"6x384": (6, 384, 1536), "bert-base": (12, 768, 3072)}


class Block(nn.Module):
    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        for name in ("query", "key", "value", "attn_out"):
            setattr(self, name, nn.Linear(hidden, hidden, bias=False))
        self.ffn_in, self.ffn_out = nn.Linear(hidden, ffn, bias=False), nn.Linear(ffn, hidden, bias=False)


class Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, ffn: int):
        super().__init__()
        self.layer = nn.ModuleList(Block(hidden, ffn) for _ in range(layers))  # names match the default include


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _mark(device: str) -> int:
    """Reset the peak and return the memory held now."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _status("VmRSS")


def _peak(device: str) -> int:
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _status("VmHWM")


def child(spec: dict) -> dict:
    from pruneofa import Pruner
    from pruneofa.sparsity import masks as M

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device, m = spec["device"], spec["num_grads"]
    model = Encoder(spec["layers"], spec["hidden"], spec["ffn"]).to(device)
    extra = {}
    if spec["criterion"] == "obs":
        extra = {"obs_num_grads": m, "obs_block_size": spec["block_size"], "obs_update_weights": spec["update"]}
    pruner = Pruner(model, method="oneshot", start_step=m, target_sparsity=0.9, criterion=spec["criterion"], **extra)
    observe = 0.0
    if spec["criterion"] == "obs":
        originals = [M.original_weight(layer) for layer in pruner.layers.values()]
        for step in range(1, m + 1):
            for w in originals:
                w.grad = torch.randn_like(w).mul_(1e-3)
            start = time.perf_counter()
            pruner.observe_gradients(step)
            observe += time.perf_counter() - start
        for w in originals:
            w.grad = None  # the loop zeroes gradients before pruner.step
    gc.collect()
    held = _mark(device)
    start = time.perf_counter()
    assert pruner.step(m)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    weights = sum(layer.weight.numel() for layer in pruner.layers.values())
    assert abs(pruner.overall_sparsity() - 0.9) < 1e-3
    return {"seconds": seconds, "peak_extra": _peak(device) - held, "weights": weights,
            "observe_ms": 1000 * observe / m if spec["criterion"] == "obs" else 0.0}


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="6x384,bert-base")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--num-grads", default="16,64", help="m values; the first is the default obs_num_grads")
    parser.add_argument("--measure-layers", default="", help="e.g. bert-base=2: build 2 layers and scale times")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    subset = {k: int(v) for k, v in (item.split("=") for item in args.measure_layers.split(",") if item)}
    rows = []
    for shape in args.shapes.split(","):
        layers, hidden, ffn = SHAPES[shape]
        built = subset.get(shape, layers)
        base = {"layers": built, "hidden": hidden, "ffn": ffn, "threads": args.threads, "device": args.device,
                "block_size": args.block_size}
        configs = [("magnitude", int(args.num_grads.split(",")[0]), False)]
        configs += [("obs", int(m), update) for m in args.num_grads.split(",") for update in (False, True)]
        for criterion, m, update in configs:
            result = run_child({**base, "criterion": criterion, "num_grads": m, "update": update})
            scale = layers / built
            full_weights = int(result["weights"] * scale)
            rows.append({"shape": shape, "criterion": criterion, "m": m if criterion == "obs" else None,
                         "update": update, "weights": full_weights, "measured_layers": built, "layers": layers,
                         "seconds": result["seconds"] * scale, "peak_extra_mb": result["peak_extra"] / 2**20,
                         "buffer_mb": full_weights * m * 4 / 2**20 if criterion == "obs" else 0.0,
                         "observe_ms": result["observe_ms"] * scale})
            print(f"{shape} {criterion} m={m} update={update}: {rows[-1]['seconds']:.2f} s", file=sys.stderr)
    print(f"\nOne mask update, B = {args.block_size}, {args.threads} threads, {args.device}, "
          f"torch {torch.__version__}\n")
    print("| shape | prunable weights | criterion | m | OBS update | update time (s) | peak extra (MB) "
          "| gradient buffer (MB) | observe (ms/step) |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        scaled = r["measured_layers"] != r["layers"]
        note = f" ({r['measured_layers']}/{r['layers']} layers measured, scaled)" if scaled else ""
        print(f"| {r['shape']}{note} | {r['weights'] / 1e6:.1f}M | {r['criterion']} | {r['m'] or '-'} | "
              f"{'yes' if r['update'] else 'no'} | {r['seconds']:.2f} | {r['peak_extra_mb']:.0f} | "
              f"{r['buffer_mb']:.0f} | {r['observe_ms']:.1f} |")
    if args.json:
        from pruneofa.fileio import atomic_write_text  # imported where used, like this script's other pruneofa imports

        atomic_write_text(args.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
