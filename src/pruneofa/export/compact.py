"""Compaction: a model pruned by whole FFN neurons and attention heads, rebuilt physically smaller
with the same outputs, for every family `sparsity.groups.LAYOUTS` describes.

A neuron whose FFN-out column is zero, or a head whose attention-output columns are zero, adds
nothing to its block (`sparsity.groups`), so its rows and columns are cut out of every weight it
spans; the model that stays is dense and smaller, with outputs equal to the pruned one's up to the
order of float sums. Which groups go is read from the zeros themselves, so a masked, folded,
transferred or QAT model all compact alike. GPT-2's fused `c_attn` (a Conv1D, weight stored as
[in, out]) keeps the kept heads' channels of each of Q, K and V, in that order, so its forward's
split into three equal parts still holds; generation's KV cache takes the smaller heads as they come.
ModernBERT's fused `Wqkv` the same; its gated `Wi` keeps the kept neurons' input rows, then their
gate rows, so its forward's split into two halves still pairs them.

The checkpoint (`export_compact_hf`):
- every block keeps all its heads and the same number of neurons: a stock transformers checkpoint
  with a smaller `intermediate_size` (`hidden_dim` for DistilBERT, `n_inner` for GPT-2), for any
  `from_pretrained`;
- fewer heads, or FFN widths that differ by block: stock transformers has no config for it (see
  `modeling_compact`). The config keeps the dense shape, records per block the heads and FFN width
  under `compact`, and names `modeling_compact.py`, copied beside it, in `auto_map`:
  `AutoModel...from_pretrained(DIR)` with remote code trusted by the user, and no pruneofa installed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneofa.errors import UserError
from pruneofa.modeldir import copy_sentence_transformers_files, load_model, modeling_compact, write_tokenizer
from pruneofa.quantization.checkpoint import plain_model_copy
from pruneofa.sparsity import masks as M
from pruneofa.sparsity.groups import Block, GroupSet, find_blocks, known_families

MODELING_FILE = "modeling_compact.py"


@dataclass(frozen=True)
class BlockCut:
    block: Block
    heads: torch.Tensor  # indices of the kept heads
    neurons: torch.Tensor  # indices of the kept FFN neurons


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, M.PRUNABLE_TYPES)}


def _kept(groups: GroupSet, layers: dict[str, nn.Module]) -> torch.Tensor:
    """Groups with a non-zero output-side column; at least one (a zero group is exact to keep)."""
    alive = torch.zeros(groups.size, dtype=torch.bool)
    for member in groups.output_side:
        layer = layers[member.layer]
        nonzero_columns = (M.as_out_in(layer, layer.weight) != 0).any(dim=0)
        alive |= nonzero_columns[member.index].any(dim=-1)
    if not alive.any():
        alive[0] = True
    return alive.nonzero().flatten()


@torch.no_grad()
def _sliced(layer: nn.Module, axis: int, units: torch.Tensor) -> nn.Module:
    """`layer` (Linear or Conv1D) with only the rows (axis 0) or columns (axis 1) `units` of its
    (out, in) weight."""
    weight = M.as_out_in(layer, layer.weight).index_select(axis, units)
    new = modeling_compact.resized(layer, *weight.shape)
    new.weight.copy_(M.from_out_in(new, weight))
    if layer.bias is not None:
        new.bias.copy_(layer.bias if axis == 1 else layer.bias.index_select(0, units))
    return new


def _attention_attributes(attention: nn.Module, block: Block, n_heads: int) -> dict[str, int]:
    """What the attention module's forward reads of the head count and the heads' total width."""
    layout = block.layout
    widths = {a: n_heads * block.head_dim for a in layout.width_attrs if hasattr(attention, a)}
    return {layout.heads_attr: n_heads, **widths} if layout.heads_attr else widths


def _cut(model: nn.Module, cut: BlockCut, layers: dict[str, nn.Module]) -> None:
    block = cut.block
    for groups, kept in ((block.heads, cut.heads), (block.ffn, cut.neurons)):
        for member in groups.members:
            parent, _, attr = member.layer.rpartition(".")
            # sorted: a fused Q/K/V projection keeps all kept Q channels, then K, then V
            units = member.index[kept].flatten().sort().values
            setattr(model.get_submodule(parent), attr, _sliced(layers[member.layer], member.axis, units))
    attention = model.get_submodule(block.path(block.layout.attention))
    for key, value in _attention_attributes(attention, block, len(cut.heads)).items():
        setattr(attention, key, value)


def plan_cuts(model: nn.Module) -> list[BlockCut]:
    """Per block of a plain (masks folded) model: the heads and FFN neurons that stay."""
    layers = _layers(model)
    blocks = find_blocks(model, layers)
    if not blocks:
        raise UserError(f"{type(model).__name__} has no transformer block of a known family to compact",
                        f"compaction rebuilds the attention and FFN layers of {known_families()} blocks")
    return [BlockCut(b, _kept(b.heads, layers), _kept(b.ffn, layers)) for b in blocks]


def compact_model(model: nn.Module) -> nn.Module:
    """A physically smaller copy of `model` (masks folded, QAT weights dequantized) without its
    zero heads and FFN neurons; `model` is not modified."""
    plain = plain_model_copy(model, keep_quantized_values=True).eval()
    cuts = plan_cuts(plain)
    layers = _layers(plain)
    for cut in cuts:
        _cut(plain, cut, layers)
    widths = {len(c.neurons) for c in cuts}
    already_compact = modeling_compact.COMPACT_KEY in plain.config.to_dict()  # its record must be rewritten
    if not already_compact and all(len(c.heads) == c.block.heads.size for c in cuts) and len(widths) == 1:
        setattr(plain.config, cuts[0].block.layout.ffn_config_key, widths.pop())
        return plain
    return _with_compact_config(plain, cuts)


def _relative(name: str, prefix: str) -> str:
    return name[len(prefix) + 1:] if prefix else name


def compact_record(model: nn.Module, cuts: list[BlockCut]) -> dict[str, Any]:
    """`config.compact`: per block heads and FFN width, and what `modeling_compact.shrink` rebuilds."""
    base = next(name for name, m in model.named_modules() if m is model.base_model)
    shapes, attributes = {}, {}
    for cut in cuts:
        block = cut.block
        for groups in (block.heads, block.ffn):
            for member in groups.members:
                layer = model.get_submodule(member.layer)
                shapes[_relative(member.layer, base)] = list(M.as_out_in(layer, layer.weight).shape)
        attention = block.path(block.layout.attention)
        attributes[_relative(attention, base)] = _attention_attributes(model.get_submodule(attention), block,
                                                                       len(cut.heads))
    return {"attention_heads": [len(c.heads) for c in cuts], "ffn_sizes": [len(c.neurons) for c in cuts],
            "head_dim": cuts[0].block.head_dim, "linear_shapes": shapes, "module_attributes": attributes}


def _with_compact_config(plain: nn.Module, cuts: list[BlockCut]) -> nn.Module:
    # a model compacted before is a Compact<stock class> already
    family = type(plain.config).__name__.removesuffix("Config").removeprefix("Compact")
    architecture = type(plain).__name__.removeprefix("Compact")
    model_class = getattr(modeling_compact, f"Compact{architecture}", None)
    if model_class is None:
        raise UserError(f"a compacted {architecture} with fewer heads has no checkpoint class",
                        "compaction with heads removed supports the model classes of transformers itself")
    auto_map = {"AutoConfig": f"{Path(MODELING_FILE).stem}.Compact{family}Config"}
    for suffix, auto_class in modeling_compact.AUTO_CLASSES.items():
        if hasattr(modeling_compact, f"Compact{family}{suffix}"):
            auto_map[auto_class] = f"{Path(MODELING_FILE).stem}.Compact{family}{suffix}"
    settings = {k: v for k, v in plain.config.to_dict().items()
                if k not in ("model_type", "transformers_version", "architectures", "auto_map",
                             modeling_compact.COMPACT_KEY)}
    config = model_class.config_class(**settings, auto_map=auto_map,
                                      **{modeling_compact.COMPACT_KEY: compact_record(plain, cuts)})
    compact = model_class(config)
    compact.load_state_dict(plain.state_dict())
    return compact.eval()


def export_compact_hf(model_or_dir: nn.Module | str | Path, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write the compacted model as a transformers checkpoint (see the module docstring). Returns `out_dir`."""
    model, source_dir = load_model(model_or_dir)
    out = Path(out_dir)
    compact = compact_model(model)
    compact.save_pretrained(out)
    if hasattr(compact.config, modeling_compact.COMPACT_KEY):
        shutil.copyfile(modeling_compact.__file__, out / MODELING_FILE)
    write_tokenizer(out, tokenizer, source_dir)
    copy_sentence_transformers_files(source_dir, out)  # the hidden size is kept, so the pooling still fits
    return out
