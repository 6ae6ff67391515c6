"""Structured patterns: whole FFN neurons and attention heads (`groups`), chosen by magnitude.

- ``structured``: in every block, exactly round(f_ffn * neurons) FFN neurons and round(f_heads *
  heads) attention heads are pruned (at least one of each stays). A group's score is the L2 norm of
  all its weights as the model uses them (mask * w): FFN-in row + FFN-out column, or Q, K, V rows +
  output columns. Layers outside every group (the pooler) keep their masks.
- ``hybrid``: the same groups, then unstructured magnitude pruning of what remains, so that every
  prunable layer reaches the weight sparsity (or keeps the group zeros, where those are more).

A group with no weight left scores -inf, so pruned groups never come back, and every new mask is
and-ed with the old one: no single weight revives either.
"""

from __future__ import annotations

import torch

from pruneofa.sparsity.criteria import magnitude_scores
from pruneofa.sparsity.groups import Block, GroupSet, Member
from pruneofa.sparsity.patterns import Pattern, keep_top, layer_mask

Views = dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer -> ((out, in) weight, (out, in) bool keep-mask)


def _per_unit(tensor: torch.Tensor, member: Member) -> torch.Tensor:
    """(groups,) sums of `tensor` over each group's rows (axis 0) or columns (axis 1)."""
    return tensor.sum(dim=1 - member.axis)[member.index.to(tensor.device)].sum(dim=-1)


def group_scores(views: Views, groups: GroupSet) -> torch.Tensor:
    """L2 norm of each group's effective weights; -inf for a group with no weight left."""
    device = views[groups.members[0].layer][0].device
    squares = torch.zeros(groups.size, device=device)
    alive = torch.zeros(groups.size, device=device)
    for member in groups.members:
        weight, mask = views[member.layer]
        squares += _per_unit((weight.float() * mask).pow(2), member)
        alive += _per_unit(mask.float(), member)
    return squares.sqrt().masked_fill(alive == 0, float("-inf"))


def group_keep(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """(groups,) keep flags: exactly round(fraction * groups) of the lowest scores go, one group at least stays."""
    n_prune = min(round(fraction * scores.numel()), scores.numel() - 1)
    return keep_top(scores, n_prune)


def expand_groups(groups: GroupSet, keep: torch.Tensor, masks: dict[str, torch.Tensor]) -> None:
    """And each member's mask (in place in `masks`) with the kept groups' rows or columns."""
    for member in groups.members:
        mask = masks[member.layer]
        line = torch.ones(mask.shape[member.axis], dtype=torch.bool, device=mask.device)
        index = member.index.to(mask.device)
        line[index.flatten()] = keep.to(mask.device)[:, None].expand_as(index).flatten()
        masks[member.layer] = mask & (line[:, None] if member.axis == 0 else line[None, :])


def structured_masks(views: Views, blocks: list[Block], ffn_fraction: float, head_fraction: float
                     ) -> dict[str, torch.Tensor]:
    """New keep-masks of every layer in `views`: groups pruned in each block, other layers unchanged."""
    masks = {name: mask.clone() for name, (_, mask) in views.items()}
    for block in blocks:
        for groups, fraction in ((block.ffn, ffn_fraction), (block.heads, head_fraction)):
            expand_groups(groups, group_keep(group_scores(views, groups), fraction), masks)
    return masks


def hybrid_masks(views: Views, blocks: list[Block], ffn_fraction: float, head_fraction: float, sparsity: float
                 ) -> dict[str, torch.Tensor]:
    """Groups first, then per layer unstructured magnitude pruning of the rest up to `sparsity`."""
    grouped = structured_masks(views, blocks, ffn_fraction, head_fraction)
    unstructured = Pattern("unstructured")
    result = {}
    for name, (weight, _) in views.items():
        mask = grouped[name]
        # the group zeros are pruned entries (-inf): a target below them must not bring any back
        layer_sparsity = max(sparsity, int((~mask).sum()) / mask.numel())
        result[name] = layer_mask(magnitude_scores(weight), mask, layer_sparsity, unstructured)
    return result
