"""A BERT-style encoder with the per-layer Python overhead cut down.

transformers' eager BertLayer costs ~0.3-0.4 ms of Python/dispatch per layer on this CPU (measured
with a tiny-width model), as much as the sparse int8 matmuls of a 6x384 model. When every layer
runs sparse kernels of one precision, the whole encoder is one C++ call (`native_encoder.py`).
Otherwise (layers left dense by the policy, or the dense engines) this encoder runs each layer
as 4 matmul calls plus one attention call:

    qkv = [Q|K|V](h)                      one sparse call (the three weights stacked)
    ctx = sdpa(q, k, v, mask)             PyTorch's fused attention
    h   = LayerNorm(O(ctx) + h)           one call: bias, residual and LayerNorm in the kernel's post-op
    f   = GELU(I(h))                      one call: GELU in the kernel's epilogue
    h   = LayerNorm(Out(f) + h)           one call

When all four ops of a layer are sparse kernels, the layer runs "feature-major" ([features,
tokens], `kernels.feature_major_ld`): each kernel's output is already in the layout the next
kernel reads, so only the Q/K/V output (token-major for PyTorch's attention) and the attention
output are transposed, instead of the input and output of every matmul.

It replaces the model's `encoder` child module (setattr on the parent) and keeps the original one
as `original`: any call the fast path does not cover (attentions or hidden states requested,
cross-attention, caches, training mode, an unknown attention implementation) runs the original
layers, whose Linear modules are the converted ones, so results agree either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruneofa.runtime.kernels import AddLayerNorm, feature_major_ld
from pruneofa.runtime.layers import set_child
from pruneofa.runtime.native_encoder import NativeEncoder, key_major_additive_mask
from pruneofa.runtime.ops import SparseF32Op, SparseI8Op, fused_op, op_for
from pruneofa.sparsity.groups import BERT, layout_of

# the BERT block layout (`sparsity.groups.BERT`: RoBERTa, XLM-RoBERTa, ... alike) and its post-LayerNorms
_PROJECTIONS = (*BERT.paths(), "attention.output.LayerNorm", "output.LayerNorm")
NOT_PLAIN_ENCODER = ("its encoder is not a plain bidirectional one (a decoder, cross-attention, chunked FFN or an "
                     "attention implementation other than eager/sdpa)")


def is_bert_like_encoder(module: nn.Module) -> bool:
    layers = getattr(module, "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    config = getattr(module, "config", None)
    if config is None or getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return False
    if getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        return False
    for layer in layers:
        for path in _PROJECTIONS:
            try:
                layer.get_submodule(path)
            except AttributeError:
                return False
        if getattr(layer, "chunk_size_feed_forward", 0):
            return False
    return True


class _LayerNorm:
    def __init__(self, ln: nn.LayerNorm):
        self.weight, self.bias, self.eps = ln.weight.detach().float(), ln.bias.detach().float(), float(ln.eps)

    def post(self, residual: torch.Tensor) -> AddLayerNorm:
        return AddLayerNorm(residual, self.weight, self.bias, self.eps)


class FusedLayer:
    def __init__(self, layer: nn.Module):
        sa = layer.get_submodule(BERT.attention)
        self.heads, self.head_dim = getattr(sa, BERT.heads_attr), sa.attention_head_size
        self.scaling = float(getattr(sa, "scaling", self.head_dim**-0.5))
        qkv = [layer.get_submodule(path) for path in BERT.qkv]
        self.qkv = fused_op(qkv)
        self.q_k_v = None if self.qkv is not None else [op_for(m, None) for m in qkv]
        self.out_attn = op_for(layer.get_submodule(BERT.attn_out), None)
        self.ln_attn = _LayerNorm(layer.attention.output.LayerNorm)
        self.ffn_in = op_for(layer.get_submodule(BERT.ffn_in), layer.intermediate.intermediate_act_fn)
        self.ffn_out = op_for(layer.get_submodule(BERT.ffn_out), None)
        self.ln_ffn = _LayerNorm(layer.output.LayerNorm)

        ops = [self.qkv, self.out_attn, self.ffn_in, self.ffn_out]
        self.feature_major = any(all(isinstance(op, cls) for op in ops) for cls in (SparseF32Op, SparseI8Op))

    def _attention(self, qkv: torch.Tensor, batch: int, seq: int, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = qkv.view(batch, seq, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        return ctx.transpose(1, 2).reshape(batch * seq, self.heads * self.head_dim).contiguous()

    def __call__(self, h: torch.Tensor, batch: int, seq: int, mask: torch.Tensor | None) -> torch.Tensor:
        """h: token-major [tokens, width], or feature-major [width, ld] if self.feature_major."""
        if self.feature_major:
            m = batch * seq
            ctx = self._attention(self.qkv(h, tokens=m), batch, seq, mask)
            h = self.out_attn(ctx, self.ln_attn.post(h), out_feature_major=True)
            f = self.ffn_in(h, tokens=m, out_feature_major=True)
            return self.ffn_out(f, self.ln_ffn.post(h), tokens=m, out_feature_major=True)
        if self.qkv is not None:
            ctx = self._attention(self.qkv(h), batch, seq, mask)
        else:
            q, k, v = (op(h).view(batch, seq, self.heads, self.head_dim).transpose(1, 2) for op in self.q_k_v)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
            ctx = ctx.transpose(1, 2).reshape(h.shape[0], self.heads * self.head_dim).contiguous()
        h = self.out_attn(ctx, self.ln_attn.post(h))
        return self.ffn_out(self.ffn_in(h), self.ln_ffn.post(h))


def to_feature_major(h: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(h.shape[1], feature_major_ld(h.shape[0]), dtype=h.dtype)
    out[:, : h.shape[0]] = h.t()
    return out


def to_token_major(h_fm: torch.Tensor, tokens: int) -> torch.Tensor:
    return h_fm[:, :tokens].t().contiguous()


class FusedEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, int8_attention: bool = True):
        super().__init__()
        self.original = encoder
        self.config = encoder.config
        self.fused_layers = [FusedLayer(layer) for layer in encoder.layer]
        self.native = None
        if NativeEncoder.supports(self.fused_layers):
            first = self.fused_layers[0]
            self.native = NativeEncoder(self.fused_layers, first.out_attn.n_out, first.qkv.threads,
                                        int8_attention)
        self.train(encoder.training)  # a new module starts in training mode, which would disable the fast path

    def _fast_path_ok(self, hidden_states: torch.Tensor, attention_mask, kwargs: dict) -> bool:
        config = self.config
        wants_extra = any(
            kwargs.get(key, getattr(config, key, False)) for key in ("output_attentions", "output_hidden_states")
        )
        mask_ok = attention_mask is None or (attention_mask.dim() == 4 and attention_mask.dtype in
                                              (torch.bool, hidden_states.dtype))
        return (not self.training and not wants_extra and mask_ok and hidden_states.dtype == torch.float32
                and not torch.is_grad_enabled())

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                past_key_values=None, use_cache: bool | None = None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

        if (encoder_hidden_states is not None or past_key_values is not None or use_cache
                or not self._fast_path_ok(hidden_states, attention_mask, kwargs)):
            return self.original(hidden_states, attention_mask, encoder_hidden_states,
                                 encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
                                 use_cache=use_cache, **kwargs)
        batch, seq, width = hidden_states.shape
        if self.native is not None and seq <= self.native.max_seq and (attention_mask is None or attention_mask.shape[1] == 1):
            h = self.native(hidden_states, key_major_additive_mask(attention_mask, batch, seq))
            return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=h)
        h, feature_major = hidden_states.reshape(batch * seq, width).contiguous(), False
        for layer in self.fused_layers:
            if layer.feature_major != feature_major:  # only where sparse and dense layers alternate
                h = to_feature_major(h) if layer.feature_major else to_token_major(h, batch * seq)
                feature_major = layer.feature_major
            h = layer(h, batch, seq, attention_mask)
        if feature_major:
            h = to_token_major(h, batch * seq)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=h.view(batch, seq, width))


def unfused_blocks(model: nn.Module) -> list[str]:
    """Per family, the transformer blocks (`sparsity.groups.LAYOUTS`) outside every FusedEncoder, with why:
    they run transformers' forward, the Linear layers inside on whatever the engine swapped in."""
    fused = [name for name, module in model.named_modules() if isinstance(module, FusedEncoder)]
    counts: dict[str, list] = {}
    for name, module in model.named_modules():
        layout = layout_of(module)
        if layout is None or any(name.startswith(f"{prefix}.") for prefix in fused):
            continue
        reason = layout.unfused_reason or NOT_PLAIN_ENCODER
        counts.setdefault(layout.family, [0, reason])[0] += 1
    return [f"{n} {family} blocks ({reason})" for family, (n, reason) in counts.items()]


def unfuse_encoders(model: nn.Module) -> None:
    """Put back the encoders `fuse_encoders` replaced (their Linear layers as they are now)."""
    for name in [name for name, module in model.named_modules() if isinstance(module, FusedEncoder)]:
        set_child(model, name, model.get_submodule(name).original)


def fuse_encoders(model: nn.Module, int8_attention: bool = True) -> int:
    """Replace every BERT-like encoder in `model` by a FusedEncoder; returns how many."""
    targets = [name for name, module in model.named_modules() if is_bert_like_encoder(module)]
    for name in targets:
        set_child(model, name, FusedEncoder(model.get_submodule(name), int8_attention))
    return len(targets)
