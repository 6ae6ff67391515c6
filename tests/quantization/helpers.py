"""Tiny models and batches for the quantization tests."""

import torch
from transformers import BertConfig, BertForSequenceClassification


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
    )
    return BertForSequenceClassification(config)


def batch(seed: int, size: int = 4, length: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (size, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (size,), generator=g)}
