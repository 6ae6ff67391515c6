"""The benchmark's inputs: random token ids of the model's vocabulary, a full attention mask.

The same seed gives the same tensors in the timing process and in the memory subprocesses, so
every engine sees exactly the inputs of the fp32 reference.
"""

from __future__ import annotations

import torch

def model_input_names(config) -> list[str]:
    """input_ids and attention_mask, plus token_type_ids when the model has a token-type embedding."""
    names = ["input_ids", "attention_mask"]
    return names + (["token_type_ids"] if getattr(config, "type_vocab_size", 0) else [])


def make_inputs(vocab_size: int, names: list[str], batch: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """batch x seq_len random ids in [0, vocab_size), every position attended, one segment."""
    g = torch.Generator().manual_seed(seed + batch)
    full = {
        "input_ids": torch.randint(0, vocab_size, (batch, seq_len), generator=g),
        "attention_mask": torch.ones(batch, seq_len, dtype=torch.long),
        "token_type_ids": torch.zeros(batch, seq_len, dtype=torch.long),
    }
    return {name: full[name] for name in names}
