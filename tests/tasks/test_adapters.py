"""forward_all: every row's outputs in the rows' order, from batches of rows of similar length."""

import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification

from pruneofa.tasks.adapters import forward_all


def test_rows_come_back_in_their_order_and_batches_pad_less(minilm_tokenizer):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(minilm_tokenizer), hidden_size=16,
                                                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).eval()
    texts = [" ".join(["word"] * n) for n in (30, 2, 17, 5, 29, 1, 12, 3, 25, 8)]
    rows = Dataset.from_dict(dict(minilm_tokenizer(texts)))
    shapes = []
    model.register_forward_pre_hook(lambda _, args, kwargs: shapes.append(kwargs["input_ids"].shape), with_kwargs=True)

    logits = forward_all(model, rows, 3, minilm_tokenizer, ("logits",))["logits"]

    alone = [model(**{k: torch.tensor([v]) for k, v in rows[i].items()}).logits[0].detach().numpy()
             for i in range(len(texts))]
    assert logits.shape == (10, 2)
    for i, row in enumerate(alone):
        torch.testing.assert_close(torch.from_numpy(logits[i]), torch.from_numpy(row), atol=1e-5, rtol=1e-4)
    batches_in_dataset_order = [rows["input_ids"][s:s + 3] for s in range(0, 10, 3)]
    in_dataset_order = sum(len(b) * max(map(len, b)) for b in batches_in_dataset_order)
    assert sum(b * n for b, n in shapes[:4]) < in_dataset_order
