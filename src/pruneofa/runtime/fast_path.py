"""A direct inference path for plain calls of BertModel and BertForSequenceClassification.

transformers' forward costs ~1 ms of Python per call on this CPU outside the encoder (config
lookups, output-capturing decorators, mask construction, output dataclasses; measured in thread
CPU time on the 6x384 model), which is a third of a 2-thread sparse int8 forward. For the common
call `m(input_ids=..., attention_mask=..., token_type_ids=...)` the runtime computes the same
thing directly: the embeddings and the encoder in C++ (one call each), the pooler with the model's own module.

Any other call (other arguments, labels, output_* flags, return_dict=False, position ids,
inputs_embeds, a model of another class or with unusual settings) goes through transformers'
forward, which is always correct; the tests check that both paths agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruneofa.runtime import kernels
from pruneofa.runtime.fused_encoder import FusedEncoder
from pruneofa.runtime.native_encoder import key_padding_mask

PLAIN_ARGUMENTS = {"input_ids", "attention_mask", "token_type_ids"}


def _runs_forward_of(model: nn.Module, stock: type) -> bool:
    """`model` is a `stock` whose forward is stock's own: the class itself, or a subclass that only
    changes construction (the compacted classes of `export --compact`, which build smaller layers)."""
    return isinstance(model, stock) and type(model).forward is stock.forward


def _bert_parts(model: nn.Module):
    from transformers import BertForSequenceClassification, BertModel

    if _runs_forward_of(model, BertModel):
        return model, None
    if _runs_forward_of(model, BertForSequenceClassification) and _runs_forward_of(model.bert, BertModel):
        return model.bert, model
    return None, None


class BertFastPath:
    def __init__(self, bert: nn.Module, classifier_model: nn.Module | None):
        self.bert, self.classifier_model = bert, classifier_model
        self.emb = bert.embeddings
        self.native = bert.encoder.native
        self.threads = self.native.threads
        self.max_seq = min(self.native.max_seq, self.emb.position_embeddings.num_embeddings)
        # fp32 contiguous tables go to one C call; fixed at load, like the encoder's own weight pointers
        ln = self.emb.LayerNorm
        tables = (self.emb.word_embeddings.weight, self.emb.token_type_embeddings.weight,
                  self.emb.position_embeddings.weight, ln.weight, ln.bias)
        native_tables = all(t.dtype == torch.float32 and t.is_contiguous() for t in tables)
        self.embedding_tables = tables if native_tables else None

    @classmethod
    def build(cls, model: nn.Module) -> BertFastPath | None:
        bert, head = _bert_parts(model)
        if bert is None or not isinstance(bert.encoder, FusedEncoder) or bert.encoder.native is None:
            return None
        config = model.config
        plain = (
            not config.is_decoder
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and config.return_dict
            and not config.output_attentions
            and not config.output_hidden_states
        )
        return cls(bert, head) if plain else None

    def __call__(self, args: tuple, kwargs: dict):
        """The model's output, or None if this call is not a plain one."""
        if args or not set(kwargs) <= PLAIN_ARGUMENTS or kwargs.get("input_ids") is None:
            return None
        ids = kwargs["input_ids"]
        if ids.dim() != 2 or ids.shape[1] > self.max_seq:
            return None
        attention_mask, token_type_ids = kwargs.get("attention_mask"), kwargs.get("token_type_ids")
        if attention_mask is not None and attention_mask.shape != ids.shape:
            return None
        if self.bert.training:
            return None
        hidden = self._embeddings(ids, token_type_ids)
        mask = key_padding_mask(attention_mask) if attention_mask is not None else None
        hidden = self.native(hidden, mask)
        pooled = None
        if self.bert.pooler is not None:
            pooled = self.bert.pooler.activation(self.bert.pooler.dense(hidden[:, 0]))
        return self._outputs(hidden, pooled)

    def _embeddings(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        emb, ln = self.emb, self.emb.LayerNorm
        if self.embedding_tables is not None:
            # buffered token types are zeros, which the kernel takes as "none given"
            return kernels.bert_embeddings(*self.embedding_tables, ln.eps, ids, token_type_ids, self.threads)
        seq = ids.shape[1]
        if token_type_ids is None:
            token_type_ids = emb.token_type_ids[:, :seq].expand(ids.shape[0], seq)
        # same order of additions as BertEmbeddings: (words + token types) + positions
        x = emb.word_embeddings(ids) + emb.token_type_embeddings(token_type_ids)
        x = x + emb.position_embeddings(emb.position_ids[:, :seq])
        return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)

    def _outputs(self, hidden: torch.Tensor, pooled: torch.Tensor | None):
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions, SequenceClassifierOutput

        if self.classifier_model is None:
            return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden, pooler_output=pooled)
        logits = self.classifier_model.classifier(pooled)  # dropout is the identity in eval mode
        return SequenceClassifierOutput(logits=logits)
