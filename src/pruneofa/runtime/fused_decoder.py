"""A GPT-2 decoder with transformers' per-call overhead cut down, for the sparse engines' prefill and decode.

A one-token decode step of a 90% int8 GPT-2 (12 x 768) spends ~5 ms of one thread outside the Linear kernels
in transformers' GPT2Model forward (output-capturing decorators, `create_causal_mask`, the attention-interface
dispatch, the module calls around each op), as much as half the step on an AVX-512 CPU (docs/RESULTS.md). For
the call that prefill and `generate` make, `model.transformer(input_ids, cache=DynamicCache, use_cache=True)`
with no padding, this module computes the same thing directly, per block:

    h = h + c_proj(sdpa(q, [K_cache|k], [V_cache|v]))    q, k, v = split(c_attn(LayerNorm_1(h)))
    h = h + mlp.c_proj(act(mlp.c_fc(LayerNorm_2(h))))

with the model's own (converted) Linear modules and transformers' own cache (`cache.update`), so `generate`,
beam search and the bench's cache cropping all work unchanged. It replaces the model's `transformer` child
(setattr on the parent) and keeps the original as `original`: any other call (padding, position ids, embeddings
or positions in other than the cache's next ones, hidden states or attentions asked for, cross-attention, gradients, training) runs the original forward,
whose Linear modules are the same converted ones, so results agree either way.

Where a projection runs on the runtime's kernels, the residual add and the LayerNorm after it are that call's
post-op (h += y in place, y = the next LayerNorm of h: `kernels.AddLayerNorm` with sum_out), and GPT-2's tanh
GELU is c_fc's epilogue (`engines.py`): a block is four kernel calls and the attention in PyTorch. The cache's
layers become `GrowingLayer`s (below): a step writes its keys and values into spare room, where transformers'
DynamicLayer concatenates, copying every layer's whole cache at every token (a tenth of a 90% int8 GPT-2's
step on one thread).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import DynamicLayer

from pruneofa.runtime.kernels import AddLayerNorm
from pruneofa.runtime.layers import SparseInt8Linear, SparseLinear, set_child

# GPT-2 settings the direct path computes as transformers does; any other value keeps transformers' forward
_PLAIN_CONFIG = {"add_cross_attention": False, "scale_attn_by_inverse_layer_idx": False,
                 "reorder_and_upcast_attn": False}
_SILENT_KWARGS = ("output_attentions", "output_hidden_states", "return_dict")  # fine while falsy (return_dict: any)


def is_plain_gpt2(module: nn.Module) -> bool:
    from transformers import GPT2Model

    if not (isinstance(module, GPT2Model) and type(module).forward is GPT2Model.forward):
        return False
    config = module.config
    return (all(getattr(config, key, value) == value for key, value in _PLAIN_CONFIG.items())
            and getattr(config, "_attn_implementation", "eager") in ("eager", "sdpa"))


class FusedGPT2(nn.Module):
    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.original = transformer
        self.config = transformer.config
        self.train(transformer.training)  # a new module starts in training mode, which would disable the path

    def __getattr__(self, name: str):
        """The GPT2Model's own attributes (`h`, `wte`, `get_input_embeddings`, ...) read through, so that code that
        reaches into `model.transformer` keeps working."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "original":  # not set yet
                raise
            return getattr(self.original, name)

    def forward(self, input_ids=None, cache=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, use_cache=None,
                **kwargs):
        from transformers import DynamicCache

        use_cache = self.config.use_cache if use_cache is None else use_cache
        plain = (input_ids is not None and input_ids.dim() == 2 and inputs_embeds is None and token_type_ids is None
                 and encoder_hidden_states is None and not self.training
                 and not torch.is_grad_enabled()
                 and all(key in _SILENT_KWARGS and (key == "return_dict" or not value) for key, value in kwargs.items())
                 and (cache is None or (type(cache) is DynamicCache and use_cache)))
        past = cache.get_seq_length() if plain and cache is not None else 0
        batch, seq = input_ids.shape if plain else (0, 0)
        if plain and attention_mask is not None:  # generate passes ones; any padding needs transformers' masks
            plain = attention_mask.shape == (batch, past + seq) and bool(attention_mask.all())
        if plain and position_ids is not None:  # generate passes them: the direct path takes past, past + 1, ...
            plain = (position_ids.shape in ((1, seq), (batch, seq))
                     and bool((position_ids == torch.arange(past, past + seq)).all()))
        if not plain or past + input_ids.shape[1] > self.config.n_positions:
            return self.original(input_ids, cache=cache, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 position_ids=position_ids, inputs_embeds=inputs_embeds,
                                 encoder_hidden_states=encoder_hidden_states,
                                 encoder_attention_mask=encoder_attention_mask, use_cache=use_cache, **kwargs)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if use_cache:
            grow_in_place(cache)
        return self._decode(input_ids, cache if use_cache else None, past)

    def _decode(self, input_ids: torch.Tensor, cache, past: int):
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

        gpt2 = self.original
        batch, seq = input_ids.shape
        positions = torch.arange(past, past + seq)
        h = gpt2.wte(input_ids) + gpt2.wpe(positions)  # dropout: the identity in eval mode
        # a causal mask only where new tokens see each other behind cached ones (sdpa's is_causal aligns top-left)
        mask = (torch.ones(seq, past + seq, dtype=torch.bool).tril(past) if seq > 1 and past else None)
        blocks = list(gpt2.h)
        next_norms = [block.ln_1 for block in blocks[1:]] + [gpt2.ln_f]
        h = h.contiguous()  # the running sum, updated in place from here on
        x = _layer_norm(blocks[0].ln_1, h)
        for i, (block, next_norm) in enumerate(zip(blocks, next_norms)):
            attn, mlp = block.attn, block.mlp
            q, k, v = attn.c_attn(x).view(batch, seq, 3, -1, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            if cache is not None:
                k, v = cache.update(k, v, i)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=seq > 1 and not past,
                                                 scale=attn.scaling)
            x = _add_then_norm(attn.c_proj, ctx.transpose(1, 2).reshape(batch, seq, -1), h, block.ln_2)
            x = _add_then_norm(mlp.c_proj, mlp.act(mlp.c_fc(x)), h, next_norm)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=x, cache=cache)


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _add_then_norm(projection: nn.Module, x: torch.Tensor, h: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    """h += projection(x) in place; returns ln(h). On the runtime's kernels both happen in the projection's call."""
    if isinstance(projection, (SparseLinear, SparseInt8Linear)):
        return projection(x, post=AddLayerNorm(h, ln.weight, ln.bias, ln.eps, sum_out=h))
    h += projection(x)
    return _layer_norm(ln, h)


def fuse_decoders(model: nn.Module) -> int:
    """Replace every plain GPT2Model inside `model` by a FusedGPT2; returns how many."""
    # not the model itself: a bare GPT2Model has no parent to swap it into, and keeps transformers' forward
    targets = [name for name, module in model.named_modules() if name and is_plain_gpt2(module)]
    for name in targets:
        set_child(model, name, FusedGPT2(model.get_submodule(name)))
    return len(targets)


def unfuse_decoders(model: nn.Module) -> None:
    """Put back the GPT2Models `fuse_decoders` replaced (their Linear layers as they are now)."""
    for name in [name for name, module in model.named_modules() if isinstance(module, FusedGPT2)]:
        set_child(model, name, model.get_submodule(name).original)


class GrowingLayer(DynamicLayer):
    """transformers' DynamicLayer whose keys and values are views of buffers with room to grow: `update` writes the
    new tokens in place (DynamicLayer concatenates, copying the whole cache). Everything else is DynamicLayer's:
    `crop` narrows the views (the next update writes over the cropped tail), `reorder_cache` and friends make new
    tensors, which the next update moves into new buffers. A view handed out earlier can therefore see positions
    past a crop overwritten by a later step, as a caller holding on to cache tensors across steps would need to
    know; `generate` does not."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held, new = getattr(self, "room", None), key_states.shape[-2]
        old = self.keys.shape[-2] if self.keys.dim() == 4 else 0
        fits = (held is not None and old + new <= held[0].shape[-2] and _prefix_of(self.keys, held[0], key_states)
                and _prefix_of(self.values, held[1], value_states))
        if not fits:
            room = max(64, 2 * (old + new))  # doubling: a sequence of n tokens is moved log2(n / 64) times
            held = tuple(states.new_empty(*states.shape[:2], room, states.shape[-1])
                         for states in (key_states, value_states))
            if old:
                held[0][:, :, :old], held[1][:, :, :old] = self.keys, self.values
            self.room = held
        held[0][:, :, old:old + new], held[1][:, :, old:old + new] = key_states, value_states
        self.keys, self.values = held[0][:, :, :old + new], held[1][:, :, :old + new]
        return self.keys, self.values


def _prefix_of(view: torch.Tensor, buffer: torch.Tensor, states: torch.Tensor) -> bool:
    """`view` is buffer[:, :, :n] for some n, and new `states` fit the buffer (batch, heads, head size, dtype)."""
    return (view.dim() == 4 and view.data_ptr() == buffer.data_ptr() and view.stride() == buffer.stride()
            and view.shape[:2] == buffer.shape[:2] == states.shape[:2] and view.shape[-1] == states.shape[-1]
            and view.dtype == buffer.dtype == states.dtype)


def grow_in_place(cache) -> None:
    """Turn a DynamicCache's plain DynamicLayers (and those it will add) into GrowingLayers. The objects stay the
    same (their class changes, their state is kept), so whoever holds the cache or a layer sees the change."""
    if getattr(cache, "offloading", False):  # its layers move between devices: leave them to transformers
        return
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = GrowingLayer
    if getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = GrowingLayer

