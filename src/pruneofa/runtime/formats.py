"""Compressed weight formats the kernels read, built once at load time from a dense weight.

- `CsrF32`: fp32 CSR by output row, uint16 column indices (6 bytes per non-zero).
- `QuadsI8`: int8, per-output-channel symmetric scales, non-zeros of each row grouped four at
  a time. Layout "gather": any four columns of the row (unstructured); layout "blocks": the
  four columns 4j..4j+3 of one aligned 1x4 block (block-sparse weights, no shuffles needed);
  layout "dense": every block of every row, no column indices (weights below the break-even
  sparsity: a register-blocked dense GEMM, `csrc/spmm_i8.h`).
Everything is built with vectorised torch ops: BERT-base has 85M weights, a Python loop per row
would make loading slow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_IN_FEATURES = 65535  # column indices are uint16


@dataclass
class CsrF32:
    n_out: int
    n_in: int
    row_ptr: torch.Tensor  # int32 [n_out + 1]
    cols: torch.Tensor  # int16 storage of uint16 [nnz]
    vals: torch.Tensor  # float32 [nnz]

    @property
    def nnz(self) -> int:
        return int(self.vals.numel())


def _uint16(t: torch.Tensor) -> torch.Tensor:
    """int16 tensor holding the uint16 bit pattern of t (0..65535), as the kernels read it."""
    return t.to(torch.int32).to(torch.int16)  # wraps 32768..65535 to negative: same bits


def pack_csr_f32(weight: torch.Tensor) -> CsrF32:
    w = weight.detach().float().contiguous()
    n_out, n_in = w.shape
    if n_in > MAX_IN_FEATURES:
        raise ValueError(f"in_features {n_in} > {MAX_IN_FEATURES}")
    nz = w != 0
    counts = nz.sum(1, dtype=torch.int32)
    row_ptr = torch.zeros(n_out + 1, dtype=torch.int32)
    row_ptr[1:] = torch.cumsum(counts, 0)
    rows, cols = nz.nonzero(as_tuple=True)  # row-major order: each row's columns ascending
    return CsrF32(n_out, n_in, row_ptr, _uint16(cols), w[rows, cols].contiguous())


@dataclass
class QuadsI8:
    n_out: int
    n_in: int
    layout: str  # "gather" | "blocks" | "dense"
    quad_ptr: torch.Tensor  # int32 [n_out + 1]: quads of row o are quad_ptr[o]..quad_ptr[o+1]
    quad_cols: torch.Tensor  # int16 (uint16 bits) [n_quads * 4]; "dense": empty (quad j = columns 4j..4j+3)
    quad_w: torch.Tensor  # int32 [n_quads]: the 4 int8 weights, little-endian
    w_scale: torch.Tensor  # float32 [n_out]
    w_sum: torch.Tensor  # int32 [n_out]: sum of the row's int8 weights (undoes the +128 on activations)

    @property
    def n_quads(self) -> int:
        return int(self.quad_w.numel())


def quantize_per_row(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: w ~= w8 * scale[:, None]."""
    w = weight.detach().float()
    scale = w.abs().amax(1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    w8 = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return w8, scale


def pack_quads_i8(weight: torch.Tensor, layout: str = "auto", gather_cost: float = 1.2) -> QuadsI8:
    """int8 quads; "auto" picks "blocks" when aligned 1x4 blocks need fewer than gather_cost
    times as many quads as the gather layout (one block quad costs about 1/gather_cost of a gather
    quad: it needs no byte shuffles, but streams its activations from L2 at BERT widths; measured
    0.85-1.05 gather quads, 2026-11-24, 1 thread). "dense" (never picked by "auto": the engine
    chooses it by the break-even sparsity, `policy.py`) keeps every block, zeros included."""
    n_out, n_in = weight.shape
    w8, scale = quantize_per_row(weight)
    if layout == "dense":
        k4 = (n_in + 3) // 4
        wq = torch.nn.functional.pad(w8, (0, 4 * k4 - n_in)).contiguous().view(torch.int32).flatten()
        return QuadsI8(n_out, n_in, "dense", torch.arange(n_out + 1, dtype=torch.int32) * k4,
                       torch.zeros(0, dtype=torch.int16), wq, scale.float().contiguous(), w8.sum(1, dtype=torch.int32))
    if n_in > MAX_IN_FEATURES:
        raise ValueError(f"in_features {n_in} > {MAX_IN_FEATURES}")
    nz = w8 != 0
    counts = nz.sum(1, dtype=torch.int32)
    gather_quads = (counts + 3) // 4
    pad = (-n_in) % 4
    w8_blocks = torch.nn.functional.pad(w8, (0, pad)).view(n_out, -1, 4)
    block_nz = (w8_blocks != 0).any(-1)  # [n_out, n_in/4]
    block_quads = block_nz.sum(1, dtype=torch.int32)
    if layout == "auto":
        layout = "blocks" if block_quads.sum() < gather_cost * gather_quads.sum() else "gather"

    quad_ptr = torch.zeros(n_out + 1, dtype=torch.int32)
    if layout == "blocks":
        quad_ptr[1:] = torch.cumsum(block_quads, 0)
        rows, blocks = block_nz.nonzero(as_tuple=True)
        cols = (blocks[:, None] * 4 + torch.arange(4)).flatten()
        wq = w8_blocks[rows, blocks].flatten()
    elif layout == "gather":
        quad_ptr[1:] = torch.cumsum(gather_quads, 0)
        rows, c = nz.nonzero(as_tuple=True)
        row_start = torch.zeros(n_out + 1, dtype=torch.int64)
        row_start[1:] = torch.cumsum(counts, 0)
        slot = quad_ptr[rows].long() * 4 + (torch.arange(rows.numel()) - row_start[rows])
        cols = torch.zeros(int(quad_ptr[-1]) * 4, dtype=torch.int64)  # padding: column 0, weight 0
        wq = torch.zeros(int(quad_ptr[-1]) * 4, dtype=torch.int8)
        cols[slot] = c
        wq[slot] = w8[rows, c]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return QuadsI8(
        n_out, n_in, layout, quad_ptr, _uint16(cols), wq.contiguous().view(torch.int32),
        scale.float().contiguous(), w8.sum(1, dtype=torch.int32),
    )


def concat_csr(parts: list[CsrF32]) -> CsrF32:
    """Stack the output rows of several CSR weights with the same in_features (fused Q/K/V)."""
    offsets = torch.tensor([0] + [p.nnz for p in parts[:-1]]).cumsum(0)
    row_ptr = torch.cat([parts[0].row_ptr[:1]] + [p.row_ptr[1:] + int(o) for p, o in zip(parts, offsets)])
    return CsrF32(sum(p.n_out for p in parts), parts[0].n_in, row_ptr.to(torch.int32),
                  torch.cat([p.cols for p in parts]), torch.cat([p.vals for p in parts]))


# least to most general: a dense row is all its blocks, a block quad a gather quad with consecutive columns
LAYOUT_GENERALITY = ("dense", "blocks", "gather")


def as_layout(q: QuadsI8, layout: str) -> QuadsI8:
    """The same weights in a more general layout (`LAYOUT_GENERALITY`)."""
    if LAYOUT_GENERALITY.index(layout) < LAYOUT_GENERALITY.index(q.layout):
        raise ValueError(f"cannot convert {q.layout!r} quads to {layout!r}")
    if q.layout == layout:
        return q
    cols = q.quad_cols
    if q.layout == "dense":
        cols = _uint16(torch.arange(4 * ((q.n_in + 3) // 4)).repeat(q.n_out))
    if layout == "gather" and q.n_in % 4:  # a last block's padding columns must stay within the input
        cols = torch.where(cols.to(torch.int32) & 0xFFFF >= q.n_in, torch.zeros_like(cols), cols)
    return QuadsI8(q.n_out, q.n_in, layout, q.quad_ptr, cols, q.quad_w, q.w_scale, q.w_sum)


def concat_quads(parts: list[QuadsI8]) -> QuadsI8:
    """Same for int8 quads; parts of different layouts are brought to the most general of them."""
    layout = max((p.layout for p in parts), key=LAYOUT_GENERALITY.index)
    parts = [as_layout(p, layout) for p in parts]
    offsets = torch.tensor([0] + [p.n_quads for p in parts[:-1]]).cumsum(0)
    quad_ptr = torch.cat([parts[0].quad_ptr[:1]] + [p.quad_ptr[1:] + int(o) for p, o in zip(parts, offsets)])
    return QuadsI8(sum(p.n_out for p in parts), parts[0].n_in, layout, quad_ptr.to(torch.int32),
                   torch.cat([p.quad_cols for p in parts]), torch.cat([p.quad_w for p in parts]),
                   torch.cat([p.w_scale for p in parts]), torch.cat([p.w_sum for p in parts]))
