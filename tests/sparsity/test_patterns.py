import pytest
import torch

from pruneofa.errors import UserError
from pruneofa.sparsity.patterns import global_masks, layer_mask, parse_pattern


@pytest.mark.parametrize("bad", ["block:0x4", "block:4", "nm:3:2", "nm:2:2", "nm:0:4", "diagonal", "block:1x"])
def test_malformed_patterns_are_refused(bad):
    with pytest.raises(UserError):
        parse_pattern(bad)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.85, 0.9])
def test_unstructured_hits_exact_count_and_prunes_the_smallest(sparsity):
    torch.manual_seed(0)
    w = torch.randn(48, 40)
    keep = layer_mask(w.abs(), torch.ones_like(w, dtype=torch.bool), sparsity, parse_pattern("unstructured"))
    assert (~keep).sum().item() == round(sparsity * w.numel())
    if 0 < sparsity:
        assert w[~keep].abs().max() <= w[keep].abs().min()


@pytest.mark.parametrize("rows,cols", [(1, 4), (4, 1), (4, 4), (3, 5)])
def test_block_masks_are_whole_tiles(rows, cols):
    torch.manual_seed(1)
    w = torch.randn(24, 40)  # 3x5 leaves ragged edge tiles
    keep = layer_mask(w.abs(), torch.ones_like(w, dtype=torch.bool), 0.75, parse_pattern(f"block:{rows}x{cols}"))
    n_tiles = -(-24 // rows) * -(-40 // cols)
    pr, pc = (-24) % rows, (-40) % cols
    tiles = torch.nn.functional.pad(keep.float(), (0, pc, 0, pr), value=-1).view(-(-24 // rows), rows, -(-40 // cols), cols)
    tile_vals = [t[t >= 0] for t in tiles.permute(0, 2, 1, 3).reshape(n_tiles, -1)]
    assert all(v.min() == v.max() for v in tile_vals)  # each tile all kept or all pruned
    assert sum(1 for v in tile_vals if v.max() == 0) == round(0.75 * n_tiles)


def test_nm_keeps_n_of_every_m_inputs():
    torch.manual_seed(2)
    w = torch.randn(16, 32)
    keep = layer_mask(w.abs(), torch.ones_like(w, dtype=torch.bool), 0.5, parse_pattern("nm:2:4"))
    assert (keep.view(16, 8, 4).sum(-1) == 2).all()
    # the two kept are the two largest of each group
    groups, kept = w.abs().view(16, 8, 4), keep.view(16, 8, 4)
    assert (groups[kept].view(16, 8, 2).min(-1).values >= groups[~kept].view(16, 8, 2).max(-1).values).all()


def test_pruned_weights_never_come_back_even_if_larger():
    w = torch.arange(1.0, 17.0).view(4, 4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[3, 3] = False  # the largest weight was pruned earlier
    keep = layer_mask(w.abs(), mask, 0.5, parse_pattern("unstructured"))
    assert not keep[3, 3] and (~keep).sum() == 8


def test_global_scope_pools_one_threshold():
    small, large = torch.full((8, 8), 0.1), torch.full((8, 8), 10.0)
    small[0, 0] = 20.0
    masks = global_masks({"a": small.abs(), "b": large.abs()}, {"a": small != 0, "b": large != 0}, 0.5,
                         parse_pattern("unstructured"))
    assert (~masks["a"]).sum() == 63 and (~masks["b"]).sum() == 1
