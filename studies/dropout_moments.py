"""Probe: does the encoder under packed dropout masks vary as it does under torch's? Moments over many forwards.

    python studies/dropout_moments.py [--model offline/minilm-l6] [--documents 8] [--forwards 200] [--seq-len 128]
                                      [--json out.json]

`train.cpu_dropout=packed` (pruneofa.train.cpu_dropout) draws other masks than torch's dropout; by construction
every element is kept with the same probability (to 2^-16) and scaled alike. This checks what a training step sees
through the whole encoder: `--documents` Wikipedia summaries go through it in training mode `--forwards` times with
each kind of dropout (the same weights, one copy swapped to packed masks), and for every mean-pooled embedding
dimension of every document the mean and the standard deviation over the forwards are compared: z-scores of the
differences of the means, and the ratio of the standard deviations. Draws from one distribution give a mean |z|
near sqrt(2/pi) = 0.80 and ratios near 1 (each within about 1/sqrt(2·forwards)).
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from pruneofa.bench.timing import report_result
from pruneofa.data.assets import resolve_model_path
from pruneofa.data.summaries import read_all
from pruneofa.representation_kd import mean_pooled
from pruneofa.train.cpu_dropout import use_packed_dropout


@torch.no_grad()
def pooled_draws(model: torch.nn.Module, batch: dict[str, torch.Tensor], forwards: int, desc: str) -> torch.Tensor:
    """[forwards, documents, width]: the mean-pooled last hidden states of `forwards` forwards in training mode."""
    draws = [mean_pooled(model.train()(**batch).last_hidden_state, batch["attention_mask"])
             for _ in tqdm(range(forwards), desc=desc, unit="forward")]
    return torch.stack(draws).double()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="offline/minilm-l6")
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--forwards", type=int, default=200)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [extract for _, extract in read_all(["offline/wiki-summaries"])[: args.documents]]
    batch = dict(tokenizer(texts, truncation=True, max_length=args.seq_len, padding=True, return_tensors="pt"))
    torch_dropout = AutoModel.from_pretrained(path)
    packed = copy.deepcopy(torch_dropout)
    use_packed_dropout(packed)
    a = pooled_draws(torch_dropout, batch, args.forwards, "torch dropout")
    b = pooled_draws(packed, batch, args.forwards, "packed dropout")
    n = args.forwards
    z = (a.mean(0) - b.mean(0)) / torch.sqrt((a.var(0) + b.var(0)) / n)
    ratio = (b.std(0) / a.std(0)).flatten()
    q1, median, q3 = (float(ratio.quantile(q)) for q in (0.25, 0.5, 0.75))
    result = {
        "model": args.model, "documents": args.documents, "forwards": n, "seq_len": args.seq_len,
        "threads": torch.get_num_threads(), "dimensions": int(ratio.numel()),
        "mean_abs_z": float(z.abs().mean()), "expected_mean_abs_z": math.sqrt(2 / math.pi),
        "std_ratio_median": median, "std_ratio_quartiles": [q1, q3],
        "std_torch_median": float(a.std(0).median()), "std_packed_median": float(b.std(0).median()),
    }
    return report_result(result, args.json)


if __name__ == "__main__":
    main()
