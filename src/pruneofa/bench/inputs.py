"""The benchmark's inputs: random token ids of the model's vocabulary, a full attention mask; with
`--encode`, sentences of English text cut to the sequence length.

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


TEXT = ("Sparse pre-trained language models keep the accuracy of their dense teachers while most of their "
        "weights are zero. They are pruned once, during pre-training, and then fine-tuned on many downstream "
        "tasks with their sparsity pattern fixed, and quantized to eight bits at the end. On a CPU the zero "
        "weights are skipped, so that a sentence is encoded several times faster than by the dense model. ")


def make_sentences(tokenizer, batch: int, seq_len: int, seed: int = 0) -> list[str]:
    """`batch` different windows of TEXT, each seq_len tokens long with the special tokens (the
    tokenizer may split the decoded text a token or two differently)."""
    words = tokenizer(TEXT * (1 + 2 * seq_len // 50), add_special_tokens=False)["input_ids"]
    length = max(1, seq_len - tokenizer.num_special_tokens_to_add())
    starts = [(seed + 7 * i) % max(1, len(words) - length) for i in range(batch)]
    return [tokenizer.decode(words[start:start + length]) for start in starts]
