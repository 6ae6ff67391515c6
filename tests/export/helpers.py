"""Tiny models, batches, pruning and QAT for the export tests; bit-for-bit comparisons, expected errors."""

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from pruneofa import Pruner
from pruneofa.errors import UserError
from pruneofa.export import load_compressed
from pruneofa.quantization import prepare_qat


def tiny_config(**overrides) -> BertConfig:
    return BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3, **overrides,
    )


def tiny_bert(seed: int = 0, weight_std: float = 0.02, masked_lm: bool = False):
    torch.manual_seed(seed)
    model = (BertForMaskedLM if masked_lm else BertForSequenceClassification)(tiny_config())
    if weight_std != 0.02:  # larger weights give logits of order 1, so that int8 errors show
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=weight_std)
    return model.eval()


def batch(seed: int, size: int = 4, length: int = 12, labels: bool = True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (size, length), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, length // 2 + 1:] = 0
    types = torch.zeros_like(ids)
    types[:, length // 2:] = 1
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if labels:
        out["labels"] = torch.randint(0, 3, (size,), generator=g)
    return out


def prune(model, sparsity: float = 0.9):
    """One-shot magnitude pruning to `sparsity` per layer, then the pattern locked (sparse transfer)."""
    Pruner(model, method="oneshot", target_sparsity=sparsity, start_step=0)
    return Pruner(model, method="lock")


def qat_train(model, steps: int = 3, **config):
    prepare_qat(model, **config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        model(**batch(step)).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern, so that comparisons are bit for bit (0.0 and -0.0 differ)."""
    return t.contiguous().view({4: torch.int32, 8: torch.int64, 2: torch.int16, 1: torch.int8}[t.element_size()])


def assert_bit_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(bits(a[k]), bits(b[k])), k


def expect_error(path, match: str):
    with pytest.raises(UserError, match=match) as err:
        load_compressed(path)
    assert "\n" not in str(err.value)


def flip_byte(path, offset: int = -10) -> None:
    """Damage one byte of a written file in place (a bit flip near its end, inside the tensor data)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
