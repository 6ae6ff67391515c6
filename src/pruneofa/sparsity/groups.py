"""Groups of weights that structured pruning removes together, found from the module structure.

Every transformer block holds two group sets:
- FFN neurons: neuron j is row j of the FFN-in weight (rows j and j + width of a gated FFN-in, whose
  output is split in two halves, input and gate) and column j of the FFN-out weight;
- attention heads: head h is its head_dim rows of each of Q, K and V (and of any other projection
  read per head, such as DeBERTa's relative-position keys and queries) and its head_dim columns of
  the attention output projection.

A group whose output-side columns (FFN-out, attention output) are zero adds exactly nothing to the
block's output, whatever its input-side rows and biases hold, so it can be cut out of the model
(`pruneofa.export.compact`). Weights are seen as (out, in), as in `patterns`.

`LAYOUTS` holds one `BlockLayout` per family, the only place that names a block's layers: the
Pruner's structured patterns, `export.compact` (and, through the compact config it writes,
`modeldir.modeling_compact`) and the runtime's encoder mapping all read it. A new family is one
entry here, and its tiny config in tests/conftest.py, which tests/stages/test_families.py runs
through every stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruneofa.sparsity import masks as M


@dataclass(frozen=True)
class BlockLayout:
    """One family's transformer block; module paths are relative to the block."""

    family: str  # as messages name it
    qkv: tuple[str, ...]  # three projections, or one with Q, K and V stacked (GPT-2's c_attn, ModernBERT's Wqkv)
    attn_out: str
    ffn_in: str  # with `gated_ffn`, its output is [input | gate], halves that the forward splits
    ffn_out: str
    attention: str  # the module that holds the head count and widths below
    heads_attr: str  # the attribute holding the head count; "" where the forward derives it from the width
    ffn_config_key: str  # the config field of the FFN width
    width_attrs: tuple[str, ...] = ()  # attributes of `attention` holding heads x head_dim (export.compact)
    head_dim_attr: str = ""  # with no `heads_attr`: the attribute holding the head width
    gated_ffn: bool = False
    optional_head_rows: tuple[str, ...] = ()  # more per-head projections, present in some configs only
    unfused_reason: str = ""  # why the runtime's fused encoder cannot run this block ("": it can)

    def paths(self) -> tuple[str, ...]:
        return (*self.qkv, self.attn_out, self.ffn_in, self.ffn_out)


BERT = BlockLayout(
    "BERT/RoBERTa/XLM-RoBERTa", ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attention.output.dense", "intermediate.dense", "output.dense", "attention.self", "num_attention_heads",
    "intermediate_size", ("all_head_size",))
LAYOUTS = (
    BERT,
    BlockLayout("DistilBERT", ("attention.q_lin", "attention.k_lin", "attention.v_lin"), "attention.out_lin",
                "ffn.lin1", "ffn.lin2", "attention", "n_heads", "hidden_dim",
                unfused_reason="the fused encoder maps BERT-named blocks only (DistilBERT's q_lin/ffn.lin1 are not)"),
    # split_size: the width of each of Q, K and V in c_attn's output, which the forward splits
    BlockLayout("GPT-2", ("attn.c_attn",), "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "attn", "num_heads", "n_inner",
                ("split_size",), unfused_reason="causal pre-LayerNorm decoder blocks of Conv1D layers"),
    # Wqkv's output is viewed as (3, heads, head_dim) with the head count inferred: only head_dim is read
    BlockLayout("ModernBERT", ("attn.Wqkv",), "attn.Wo", "mlp.Wi", "mlp.Wo", "attn", "", "intermediate_size",
                head_dim_attr="head_dim", gated_ffn=True,
                unfused_reason="rotary position embeddings, pre-LayerNorm, the gated GeGLU FFN and alternating "
                               "local (sliding-window)/global attention are not in the fused encoder"),
    # pos_key_proj / pos_query_proj exist where share_att_key is false (DeBERTa-v2 xlarge; v3 shares Q/K)
    BlockLayout("DeBERTa-v2/v3", ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
                "attention.output.dense", "intermediate.dense", "output.dense", "attention.self",
                "num_attention_heads", "intermediate_size", ("all_head_size",),
                optional_head_rows=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
                unfused_reason="disentangled attention (relative-position c2p/p2c score terms) is not in the fused "
                               "encoder"),
)


def known_families() -> str:
    return ", ".join(layout.family for layout in LAYOUTS)


def has_module(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def layout_of(block: nn.Module) -> BlockLayout | None:
    """The layout whose layers `block` has (of any module type: the runtime's converted layers too)."""
    return next((layout for layout in LAYOUTS if all(has_module(block, p) for p in layout.paths())), None)


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


def _head_count(attention: nn.Module, layout: BlockLayout, attn_width: int) -> int | None:
    if layout.heads_attr:
        n_heads = getattr(attention, layout.heads_attr, None)
    else:
        head_dim = getattr(attention, layout.head_dim_attr, None)
        n_heads = attn_width // head_dim if isinstance(head_dim, int) and head_dim > 0 else None
    if not isinstance(n_heads, int) or n_heads < 1 or attn_width % n_heads:
        return None
    return n_heads


def _block(name: str, module: nn.Module, layout: BlockLayout, layers: dict[str, nn.Module]) -> Block | None:
    prefix = f"{name}." if name else ""
    if not all(prefix + p in layers for p in layout.paths()):
        return None
    attn_width = _out_in_shape(layers[prefix + layout.attn_out])[1]
    n_heads = _head_count(module.get_submodule(layout.attention), layout, attn_width)
    if n_heads is None:
        return None
    head_dim = attn_width // n_heads
    head_rows = (*layout.qkv, *(p for p in layout.optional_head_rows if prefix + p in layers))
    heads = [Member(prefix + p, 0, _head_rows(_out_in_shape(layers[prefix + p])[0], n_heads, head_dim))
             for p in head_rows]
    heads.append(Member(prefix + layout.attn_out, 1, torch.arange(attn_width).view(n_heads, head_dim)))
    n_neurons = _out_in_shape(layers[prefix + layout.ffn_out])[1]
    neurons = torch.arange(n_neurons).view(n_neurons, 1)
    # a gated FFN-in's neuron j is its input row j and its gate row j + n_neurons
    ffn_in_rows = torch.cat([neurons, neurons + n_neurons], dim=1) if layout.gated_ffn else neurons
    ffn = (Member(prefix + layout.ffn_in, 0, ffn_in_rows), Member(prefix + layout.ffn_out, 1, neurons))
    return Block(name, layout, head_dim, GroupSet("heads", tuple(heads)), GroupSet("ffn", ffn))


def find_blocks(model: nn.Module, layers: dict[str, nn.Module]) -> list[Block]:
    """The transformer blocks of `model` whose attention and FFN weights are all in `layers`
    (name -> module, e.g. the layers a Pruner selected), in model order."""
    blocks = []
    for name, module in model.named_modules():
        layout = layout_of(module)
        block = _block(name, module, layout, layers) if layout is not None else None
        if block is not None:
            blocks.append(block)
    return blocks
