"""Sparsity patterns: *what* a mask may look like, and how to choose one from scores.

A pattern turns an importance matrix (higher = keep) into a boolean keep-mask at a requested
sparsity. The importance comes from a criterion (`sparsity.criteria`: |w| for magnitude, the OBS
loss increase, Wanda's |w| * ||x||); the pattern only decides which units may go together. Every
function here works on tensors seen as (out_features, in_features); `sparsity.masks` handles
layers stored transposed (GPT-2's Conv1D).

Patterns, as written in recipes (`pruning.pattern`):
- ``unstructured``: any single weight may go.
- ``block:RxC``: whole R x C tiles go together (tile score = mean of its weights' scores, e.g.
  mean |w| for magnitude), e.g. 1x4, 4x1, 4x4.
- ``nm:N:M``: in every group of M consecutive inputs of an output row, at most N stay, the N with
  the highest scores (2:4 is what sparse tensor cores run). The final sparsity is (M - N) / M.
- ``structured``: whole FFN neurons and attention heads, groups that span several layers
  (`sparsity.groups`, `sparsity.structured`); ``hybrid``: those groups, then unstructured on the rest.

Pruned entries carry a score of -inf so that a mask only ever shrinks: a weight pruned earlier
can never come back, even when other weights are exactly zero.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from pruneofa.errors import UserError


@dataclass(frozen=True)
class Pattern:
    kind: str  # "unstructured" | "block" | "nm" | "structured" | "hybrid"
    rows: int = 1  # block height
    cols: int = 1  # block width
    n: int = 0  # N of N:M (kept per group)
    m: int = 0  # M of N:M (group size)

    def __str__(self) -> str:
        if self.kind == "block":
            return f"block:{self.rows}x{self.cols}"
        if self.kind == "nm":
            return f"nm:{self.n}:{self.m}"
        return self.kind

    @property
    def grouped(self) -> bool:
        """Whether masks come from groups spanning several layers (FFN neurons, attention heads)."""
        return self.kind in GROUP_PATTERNS

    @property
    def nm_sparsity(self) -> float:
        """The sparsity an N:M pattern ends at: (M - N) / M."""
        return (self.m - self.n) / self.m


GROUP_PATTERNS = ("structured", "hybrid")
_BLOCK = re.compile(r"^block:(\d+)x(\d+)$")
_NM = re.compile(r"^nm:(\d+):(\d+)$")


def parse_pattern(text: str) -> Pattern:
    """Parse `unstructured`, `block:RxC`, `nm:N:M`, `structured` or `hybrid`; raise UserError otherwise."""
    text = str(text).strip().lower()
    if text in ("unstructured", *GROUP_PATTERNS):
        return Pattern(text)
    if match := _BLOCK.match(text):
        rows, cols = int(match[1]), int(match[2])
        if rows < 1 or cols < 1:
            raise UserError(
                f"pattern '{text}' has an empty block", "use block:RxC with R, C >= 1, e.g. block:1x4"
            )
        return Pattern("block", rows=rows, cols=cols)
    if match := _NM.match(text):
        n, m = int(match[1]), int(match[2])
        if not 0 < n < m:
            raise UserError(
                f"pattern '{text}' needs 0 < N < M", "use nm:N:M such as nm:2:4 (keep 2 of every 4)"
            )
        return Pattern("nm", n=n, m=m)
    raise UserError(
        f"unknown sparsity pattern '{text}'",
        "use unstructured, block:RxC (e.g. block:1x4), nm:N:M (e.g. nm:2:4), structured or hybrid",
    )


def keep_top(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep-mask (same shape as scores) with exactly `n_prune` of the lowest scores removed.

    topk returns exactly k indices even among equal scores, so the count is exact; it is several
    times faster than a full sort on large matrices.
    """
    flat = scores.flatten()
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.topk(flat, n_prune, largest=False, sorted=False).indices] = False
    return keep.view_as(scores)


def block_scores(scores: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Mean score of each rows x cols tile; ragged edge tiles are averaged over what they hold."""
    out_f, in_f = scores.shape
    pad_r, pad_c = (-out_f) % rows, (-in_f) % cols
    padded = torch.nn.functional.pad(scores.float(), (0, pad_c, 0, pad_r))
    count = torch.nn.functional.pad(torch.ones_like(scores, dtype=torch.float), (0, pad_c, 0, pad_r))
    shape = (padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    return padded.view(shape).sum(dim=(1, 3)) / count.view(shape).sum(dim=(1, 3))


def expand_blocks(block_mask: torch.Tensor, rows: int, cols: int, shape: torch.Size) -> torch.Tensor:
    """Inverse of `block_scores`' tiling: one entry per tile -> one entry per weight."""
    full = block_mask.repeat_interleave(rows, dim=0).repeat_interleave(cols, dim=1)
    return full[: shape[0], : shape[1]]


def pattern_scores(scores: torch.Tensor, mask: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Score of each prunable unit (weight, tile or N:M entry) from per-weight scores; pruned units get -inf."""
    if pattern.kind == "block":
        units = block_scores(scores, pattern.rows, pattern.cols)
        alive = block_scores(mask.float(), pattern.rows, pattern.cols) > 0
    else:
        units, alive = scores.float(), mask
    return units.masked_fill(~alive, float("-inf"))


def units_to_mask(unit_keep: torch.Tensor, pattern: Pattern, shape: torch.Size) -> torch.Tensor:
    if pattern.kind == "block":
        return expand_blocks(unit_keep, pattern.rows, pattern.cols, shape)
    return unit_keep


def layer_mask(scores: torch.Tensor, mask: torch.Tensor, sparsity: float, pattern: Pattern) -> torch.Tensor:
    """New keep-mask for one (out, in) layer from its importance `scores` at `sparsity`, never
    reviving pruned entries (magnitude: scores = |w|, see `criteria.magnitude_scores`).

    unstructured: exactly round(sparsity * numel) weights are pruned.
    block:RxC: exactly round(sparsity * n_tiles) tiles are pruned.
    nm:N:M: in each group of M inputs, round(sparsity * M) entries are pruned (at most M - N).
    """
    if pattern.grouped:
        raise ValueError(f"pattern {pattern} spans layers: its masks come from sparsity.structured")
    if pattern.kind == "nm":
        return _nm_mask(scores, mask, sparsity, pattern)
    units = pattern_scores(scores, mask, pattern)
    n_prune = round(sparsity * units.numel())
    return units_to_mask(keep_top(units, n_prune), pattern, scores.shape)


def _nm_mask(scores: torch.Tensor, mask: torch.Tensor, sparsity: float, pattern: Pattern) -> torch.Tensor:
    out_f, in_f = scores.shape
    if in_f % pattern.m:
        raise UserError(
            f"nm:{pattern.n}:{pattern.m} needs in_features divisible by {pattern.m}, got {in_f}",
            "exclude that layer with pruning.exclude or pick another M",
        )
    per_group = min(round(sparsity * pattern.m), pattern.m - pattern.n)
    grouped = scores.float().masked_fill(~mask, float("-inf")).view(out_f, in_f // pattern.m, pattern.m)
    keep = torch.ones_like(grouped, dtype=torch.bool)
    if per_group > 0:
        # stable sort: ties (e.g. two pruned entries) break by position, so each group loses exactly per_group
        lowest = torch.argsort(grouped, dim=-1, stable=True)[..., :per_group]
        keep.scatter_(-1, lowest, False)
    return keep.view(out_f, in_f)


def global_masks(
    scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], sparsity: float, pattern: Pattern
) -> dict[str, torch.Tensor]:
    """Keep-masks for several (out, in) layers that *together* reach `sparsity`.

    One threshold over the pooled scores of all layers, so layers end at different sparsities. That
    needs scores comparable across layers: |w| (as the paper prunes), the OBS loss increase, or
    Wanda's |w| * ||x|| (allowed, though Wanda itself compares within an output row).
    Exactly round(sparsity * total_units) units are pruned overall.
    """
    if pattern.kind not in ("unstructured", "block"):
        raise UserError(f"pattern {pattern} cannot be pruned globally", "use pruning.scope=layer")
    units = {name: pattern_scores(scores[name], masks[name], pattern) for name in scores}
    pooled = torch.cat([u.flatten() for u in units.values()])
    keep_flat = keep_top(pooled, round(sparsity * pooled.numel()))
    result, offset = {}, 0
    for name, u in units.items():
        unit_keep = keep_flat[offset : offset + u.numel()].view_as(u)
        offset += u.numel()
        result[name] = units_to_mask(unit_keep, pattern, scores[name].shape)
    return result


def check_pattern_fits(pattern: Pattern, target_sparsity: float) -> None:
    """N:M fixes the final sparsity; refuse a target it cannot reach."""
    if pattern.kind == "nm" and not math.isclose(target_sparsity, pattern.nm_sparsity, abs_tol=1e-6):
        raise UserError(
            f"pattern {pattern} ends at sparsity {pattern.nm_sparsity:g}, not {target_sparsity:g}",
            f"set pruning.target_sparsity={pattern.nm_sparsity:g}",
        )
