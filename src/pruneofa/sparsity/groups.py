"""Groups of weights that structured pruning removes together, found from the module structure.

Every transformer block holds two group sets:
- FFN neurons: neuron j is row j of the FFN-in weight and column j of the FFN-out weight;
- attention heads: head h is its head_dim rows of each of Q, K and V and its head_dim columns of
  the attention output projection.

A group whose output-side columns (FFN-out, attention output) are zero adds exactly nothing to the
block's output, whatever its input-side rows and biases hold, so it can be cut out of the model
(`pruneofa.export.compact`). Weights are seen as (out, in), as in `patterns`.

Known block layouts: BERT and its copies (RoBERTa, ...), DistilBERT, GPT-2 (Q, K, V fused in one
Conv1D `c_attn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruneofa.sparsity import masks as M


@dataclass(frozen=True)
class BlockLayout:
    family: str
    qkv: tuple[str, ...]  # three projections, or one with Q, K and V stacked (GPT-2's c_attn)
    attn_out: str
    ffn_in: str
    ffn_out: str
    attention: str  # the module that holds the head count ...
    heads_attr: str  # ... in this attribute
    ffn_config_key: str  # the config field of the FFN width
    width_attrs: tuple[str, ...] = ()  # attributes of `attention` holding heads x head_dim (export.compact)


LAYOUTS = (
    BlockLayout("bert", ("attention.self.query", "attention.self.key", "attention.self.value"),
                "attention.output.dense", "intermediate.dense", "output.dense", "attention.self",
                "num_attention_heads", "intermediate_size", ("all_head_size",)),
    BlockLayout("distilbert", ("attention.q_lin", "attention.k_lin", "attention.v_lin"), "attention.out_lin",
                "ffn.lin1", "ffn.lin2", "attention", "n_heads", "hidden_dim"),
    # split_size: the width of each of Q, K and V in c_attn's output, which the forward splits
    BlockLayout("gpt2", ("attn.c_attn",), "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "attn", "num_heads", "n_inner",
                ("split_size",)),
)


@dataclass(frozen=True)
class Member:
    """One weight's share of a group set."""

    layer: str  # module name in the model
    axis: int  # 0: the groups are rows of the (out, in) weight; 1: columns
    index: torch.Tensor  # (groups, units per group): the rows or columns of each group


@dataclass(frozen=True)
class GroupSet:
    kind: str  # "ffn" | "heads"
    members: tuple[Member, ...]

    @property
    def size(self) -> int:
        return self.members[0].index.shape[0]

    @property
    def output_side(self) -> tuple[Member, ...]:
        """The members whose zeros alone remove a group's contribution (the columns)."""
        return tuple(m for m in self.members if m.axis == 1)


@dataclass(frozen=True)
class Block:
    name: str
    layout: BlockLayout
    head_dim: int
    heads: GroupSet
    ffn: GroupSet

    def path(self, relative: str) -> str:
        return f"{self.name}.{relative}" if self.name else relative


def _out_in_shape(module: nn.Module) -> torch.Size:
    return M.as_out_in(module, M.original_weight(module)).shape


def _head_rows(total_rows: int, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows of each head in a projection holding one or several (Q, K, V) stacked outputs."""
    width = n_heads * head_dim
    parts = total_rows // width
    per_part = torch.arange(width).view(n_heads, head_dim)
    return torch.cat([per_part + p * width for p in range(parts)], dim=1)


def _block(name: str, module: nn.Module, layout: BlockLayout, layers: dict[str, nn.Module]) -> Block | None:
    prefix = f"{name}." if name else ""
    paths = (*layout.qkv, layout.attn_out, layout.ffn_in, layout.ffn_out)
    if not all(prefix + p in layers for p in paths):
        return None
    n_heads = getattr(module.get_submodule(layout.attention), layout.heads_attr, None)
    if not isinstance(n_heads, int) or n_heads < 1:
        return None
    attn_width = _out_in_shape(layers[prefix + layout.attn_out])[1]
    if attn_width % n_heads:
        return None
    head_dim = attn_width // n_heads
    heads = [Member(prefix + p, 0, _head_rows(_out_in_shape(layers[prefix + p])[0], n_heads, head_dim))
             for p in layout.qkv]
    heads.append(Member(prefix + layout.attn_out, 1, torch.arange(attn_width).view(n_heads, head_dim)))
    n_neurons = _out_in_shape(layers[prefix + layout.ffn_in])[0]
    neurons = torch.arange(n_neurons).view(n_neurons, 1)
    ffn = (Member(prefix + layout.ffn_in, 0, neurons), Member(prefix + layout.ffn_out, 1, neurons))
    return Block(name, layout, head_dim, GroupSet("heads", tuple(heads)), GroupSet("ffn", ffn))


def find_blocks(model: nn.Module, layers: dict[str, nn.Module]) -> list[Block]:
    """The transformer blocks of `model` whose attention and FFN weights are all in `layers`
    (name -> module, e.g. the layers a Pruner selected), in model order."""
    blocks = []
    for name, module in model.named_modules():
        for layout in LAYOUTS:
            block = _block(name, module, layout, layers)
            if block is not None:
                blocks.append(block)
                break
    return blocks
