"""The int8 kernel sets this CPU can run, against each other, per Linear (CPU time of one thread).

    OMP_NUM_THREADS=1 .venv/bin/python bench/kernel_sets.py                 # avx2 vs avx2-vnni
    OMP_NUM_THREADS=1 .venv/bin/python bench/kernel_sets.py --sets avx2 native --rounds 100
    OMP_NUM_THREADS=1 .venv/bin/python bench/kernel_sets.py --sets native native-noprefetch --copies 16
    OMP_NUM_THREADS=1 .venv/bin/python bench/kernel_sets.py --sets native native-nogather16 --layouts gather \
        --layers 384x1536 1536x384 384x384 --tokens 8 16 --copies 16

The native build runs one kernel set, the CPU's best; an AVX-512 CPU can also run the AVX2 sets (built with
`build.library_path(target=...)`), so their difference is measured on one machine, interleaved call by call.
Layouts: gather (90% unstructured), blocks (90% in 1x4 blocks), dense; by default one token (the decode path)
and 128, on BERT-Base's FFN layers (768x3072 and 3072x768: in x out features).
--copies N cycles through N copies of each layer, so that each call's weights come from L3 (or DRAM) as in a
model, not from the L1/L2 of the call before.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch

from pruneofa.runtime import build, kernels
from pruneofa.runtime.formats import pack_quads_i8

TARGETS = {"avx2": ["-march=x86-64-v3"], "avx2-vnni": ["-march=x86-64-v3", "-mavxvnni"], "native": None,
           # the native set without its software prefetch of the sparse weights (`spmm_i8.h` prefetch_quads)
           "native-noprefetch": ["-march=native", "-DPOFA_NO_SPARSE_PREFETCH"],
           # ... and without the 16-lane gather of the one-token gather-layout dot product (`gemv.h` dot_quads_i8)
           "native-nogemv512": ["-march=native", "-DPOFA_NO_GEMV512"],
           # ... and without the <= 16-token gather-layout kernel (`spmm_i8.h` row_i8_gather16: vpermb, AVX512-VBMI)
           "native-nogather16": ["-march=native", "-DPOFA_NO_GATHER16"]}


def layer(layout: str, n_in: int, n_out: int, sparsity: float = 0.9) -> torch.Tensor:
    w = torch.randn(n_out, n_in)
    if layout == "blocks":
        return w * (torch.rand(n_out, n_in // 4) >= sparsity).repeat_interleave(4, 1)
    return w if layout == "dense" else w * (torch.rand(n_out, n_in) >= sparsity)


def layer_shape(text: str) -> tuple[int, int]:
    """"768x3072" -> (768, 3072): a Linear's in and out features."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"layer {text!r} is not IN x OUT features; write it like 768x3072")
    return int(parts[0]), int(parts[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs=2, default=["avx2", "avx2-vnni"], choices=sorted(TARGETS))
    ap.add_argument("--rounds", type=int, default=55)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--copies", type=int, default=1, help="copies of each layer called in turn (cold weights)")
    ap.add_argument("--layouts", nargs="+", default=["gather", "blocks", "dense"], choices=["gather", "blocks", "dense"])
    ap.add_argument("--layers", nargs="+", type=layer_shape, default=[(768, 3072), (3072, 768)],
                    help="IN x OUT features, e.g. 384x1536")
    ap.add_argument("--tokens", nargs="+", type=int, default=[1, 128])
    args = ap.parse_args()
    libs = {}
    for name in args.sets:
        path = build.library_path() if TARGETS[name] is None else build.library_path(target=TARGETS[name])
        libs[name] = kernels.bind(ctypes.CDLL(str(path)))
    a, b = args.sets
    print(f"CPU {build.cpu_model()}: {a} = {kernels.kernel_isa(libs[a])}, {b} = {kernels.kernel_isa(libs[b])}; "
          f"one thread, CPU time, medians of {args.rounds} interleaved calls")
    print(f"| layout | layer | tokens | {a} us | {b} us | {a} / {b} |\n|---|---|---:|---:|---:|---:|")
    torch.manual_seed(0)
    for layout in args.layouts:
        for n_in, n_out in args.layers:
            copies = [pack_quads_i8(layer(layout, n_in, n_out), layout) for _ in range(args.copies)]
            for tokens in args.tokens:
                x = torch.randn(tokens, n_in)
                times: dict[str, list[float]] = {name: [] for name in libs}
                for i in range(args.warmup + args.rounds):
                    for j, (name, lib) in enumerate(libs.items()):
                        quads = copies[(i + j * len(copies) // 2) % len(copies)]  # not the copy the other just read
                        start = time.thread_time()
                        kernels.spmm_i8(x, quads, None, None, 1, library=lib)
                        if i >= args.warmup:
                            times[name].append(time.thread_time() - start)
                us = {name: statistics.median(t) * 1e6 for name, t in times.items()}
                print(f"| {layout} | {n_in}->{n_out} | {tokens} | {us[a]:.1f} | {us[b]:.1f} | {us[a] / us[b]:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
