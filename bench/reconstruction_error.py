"""How much of a real layer's output survives one-shot pruning, by mask and by update.

    .venv/bin/python bench/reconstruction_error.py [--model runs/demo/teacher] [--layer 2]
        [--sparsities 0.3,0.6,0.85] [--documents 64] [--damp 0.01]

The model (default: the offline MiniLM) reads `--documents` Wikipedia summaries (up to 128 tokens
each); the inputs of every Linear of encoder layer `--layer` are recorded. The first half of the
documents calibrates (H = X^T X), the second half measures, so the figures are out of sample:

    relative error = ||X W'^T - X W^T||^2 / ||X W^T||^2      on the held-out tokens

for four ways of pruning each matrix to each sparsity (one threshold per matrix, as `pruning.scope=layer`):
the mask of wanda's |w| * ||x|| alone; that mask with SparseGPT's update of the survivors
(`pruning.reconstruct`); the mask of OBS's w^2 / [H^-1]_jj (the same H; the cost of each weight when
the rest of its row may move) alone, and with the update.
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from pruneofa.data.assets import resolve_model_path
from pruneofa.data.summaries import read_titled_summaries
from pruneofa.sparsity.hessian import dampened, inverse, reconstruct


def keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep.view(-1)[scores.view(-1).argsort()[: int(sparsity * scores.numel())]] = False
    return keep


def layer_inputs(model_path: str, layer: int, documents: int) -> tuple[dict[str, list[torch.Tensor]], torch.nn.Module]:
    """Each Linear of encoder layer `layer`: its inputs, one (tokens, in) float64 tensor per document."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    block = model.encoder.layer[layer]
    inputs: dict[str, list[torch.Tensor]] = {}
    for name, module in block.named_modules():
        if isinstance(module, torch.nn.Linear):
            def record(module, args, name=name):
                # no padding in a batch of one: every row is a real token
                inputs.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]).double())
            module.register_forward_pre_hook(record)
    texts = [extract for _, extract in read_titled_summaries("offline/wiki-summaries")[:documents]]
    with torch.no_grad():
        for text in tqdm(texts, desc="forward", unit="doc"):
            model(**tokenizer(text, truncation=True, max_length=128, return_tensors="pt"))
    return inputs, block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="offline/minilm-l6")
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--sparsities", default="0.3,0.6,0.85")
    parser.add_argument("--documents", type=int, default=64)
    parser.add_argument("--damp", type=float, default=0.01)
    args = parser.parse_args()
    torch.manual_seed(0)
    inputs, block = layer_inputs(resolve_model_path(args.model), args.layer, args.documents)
    half = args.documents // 2
    print(f"| matrix (layer {args.layer}) | sparsity | wanda mask | + update | OBS mask | + update |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, xs in inputs.items():
        calibration, held_out = torch.cat(xs[:half]), torch.cat(xs[half:])
        w = block.get_submodule(name).weight.detach().double()
        h = calibration.T @ calibration
        reference = (held_out @ w.T).pow(2).sum()

        def error(new: torch.Tensor) -> float:
            return float((held_out @ (w - new).T).pow(2).sum() / reference)

        wanda = w.abs() * h.diagonal().sqrt()[None, :]
        obs = w.pow(2) / inverse(dampened(h, args.damp)[0]).diagonal()[None, :]
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            row = []
            for scores in (wanda, obs):
                keep = keep_top(scores, sparsity)
                row += [error(w * keep), error(reconstruct(w, h, keep, args.damp))]
            print(f"| {name} | {sparsity:.0%} | " + " | ".join(f"{e:.4f}" for e in row) + " |", flush=True)


if __name__ == "__main__":
    main()
