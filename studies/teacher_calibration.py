"""Probe: does fitting a pruned encoder's layers to its teacher's outputs, masks fixed, bring back retrieval recall?

    python studies/teacher_calibration.py TEACHER_DIR STUDENT_DIR [--target teacher|self] [--documents 256]

`pruning.reconstruct` moves a layer's surviving weights to keep that layer's own outputs on its own inputs, so it
cannot undo the drift a student has gathered from the layers below. This probe tries the other target, once, after
pruning: layer by layer in forward order (each fit sees the inputs the layers already fitted produce), every Linear
of the student's encoder blocks gets the weights and bias that best map its inputs X_s to the teacher's outputs of
the same layer on the same tokens, Y_t = X_t W_t^T + b_t, under its zero pattern:

    [W b]* = argmin ||[X_s 1] [W b]^T - Y_t||^2      (dense least squares, H = [X_s 1]^T [X_s 1] + damp)
    [W b]  = SparseGPT's update of [W b]* under the student's mask (`sparsity.hessian.reconstruct`)

`--target self` fits the student's own outputs instead (plain SparseGPT on these documents), the control.
Calibration reads `--documents` training-split Wikipedia summaries (up to 128 tokens); it then prints recall@1/@10 of
`pruneofa eval STUDENT retrieval` before and after (held-out split, as the eval). Nothing is written.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from tqdm import tqdm

from pruneofa.data.corpus import split_documents
from pruneofa.data.summaries import read_all
from pruneofa.models import load_tokenizer
from pruneofa.sparsity.hessian import reconstruct
from pruneofa.tasks.retrieval import RetrievalConfig, embed, gold_ranks, held_out_pairs, load_encoder, recall_at

# the Linears of a BERT block, grouped by the input they share, in forward order
GROUPS = (("attention.self.query", "attention.self.key", "attention.self.value"), ("attention.output.dense",),
          ("intermediate.dense",), ("output.dense",))


@torch.no_grad()
def inputs_of(model: nn.Module, module: nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """(real tokens, in) float64: what `module` reads over `batches`, padding left out."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        for batch in batches:
            model(**batch)
    finally:
        handle.remove()
    real = torch.cat([b["attention_mask"].reshape(-1) for b in batches]).bool()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in seen])[real].double()


@torch.no_grad()
def fit_layer(student: nn.Linear, x_student: torch.Tensor, target: torch.Tensor, damp: float) -> None:
    """Set `student`'s weight and bias to the masked least-squares fit of `target` from `x_student` (docstring above)."""
    augmented = torch.cat([x_student, torch.ones(len(x_student), 1, dtype=x_student.dtype)], 1)
    gram = augmented.T @ augmented
    dampened = gram + damp * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    dense = torch.linalg.solve(dampened, augmented.T @ target).T  # (out, in + 1)
    keep = torch.cat([student.weight != 0, torch.ones(len(dense), 1, dtype=torch.bool)], 1)  # the bias stays dense
    fitted = reconstruct(dense, gram, keep, damp)
    student.weight.copy_(fitted[:, :-1].to(student.weight.dtype))
    student.bias.copy_(fitted[:, -1].to(student.bias.dtype))


@torch.no_grad()
def calibrate(student: nn.Module, teacher: nn.Module, batches: list[dict[str, torch.Tensor]], target: str = "teacher",
              damp: float = 0.01) -> list[tuple[str, float, float]]:
    """Fit every block Linear of `student` (a transformers BERT encoder) in forward order; returns
    (name, mean squared error to the teacher's output before, after) per Linear."""
    errors = []
    blocks = list(zip(student.encoder.layer, teacher.encoder.layer))
    for index, (block_s, block_t) in enumerate(tqdm(blocks, desc="calibrate", unit="block")):
        for group in GROUPS:
            x_s = inputs_of(student, block_s.get_submodule(group[0]), batches)
            x_t = inputs_of(teacher, block_t.get_submodule(group[0]), batches)
            for name in group:
                layer_s, layer_t = block_s.get_submodule(name), block_t.get_submodule(name)
                teacher_out = x_t @ layer_t.weight.double().T + layer_t.bias.double()
                before = float(((x_s @ layer_s.weight.double().T + layer_s.bias.double() - teacher_out) ** 2).mean())
                goal = teacher_out if target == "teacher" else x_s @ layer_s.weight.double().T + layer_s.bias.double()
                fit_layer(layer_s, x_s, goal, damp)
                after = float(((x_s @ layer_s.weight.double().T + layer_s.bias.double() - teacher_out) ** 2).mean())
                errors.append((f"{index}.{name}", before, after))
    return errors


def recall(model: nn.Module, tokenizer, pairs: list[tuple[str, str]], cfg: RetrievalConfig) -> dict[str, float]:
    args = (cfg.max_seq_len, cfg.batch_size)
    titles = embed(model, tokenizer, [t for t, _ in pairs], *args, desc="embed titles")
    summaries = embed(model, tokenizer, [s for _, s in pairs], *args, desc="embed summaries")
    return recall_at(gold_ranks(titles, summaries, torch.arange(len(pairs))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher")
    parser.add_argument("student")
    parser.add_argument("--target", choices=("teacher", "self"), default="teacher")
    parser.add_argument("--documents", type=int, default=256)
    parser.add_argument("--damp", type=float, default=0.01)
    args = parser.parse_args()
    cfg = RetrievalConfig()
    tokenizer = load_tokenizer(args.teacher)
    teacher, student = load_encoder(args.teacher), load_encoder(args.student)
    pairs = held_out_pairs(cfg)
    print("before", recall(student, tokenizer, pairs, cfg), flush=True)
    train, _ = split_documents([text for _, text in read_all(cfg.files)], cfg.validation_fraction, cfg.split_seed)
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.documents].tolist()
    docs = [train[i] for i in chosen]
    batches = [dict(tokenizer(docs[i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt"))
               for i in range(0, len(docs), 32)]
    for name, before, after in calibrate(student, teacher, batches, args.target, args.damp):
        print(f"{name:32s} squared error to the teacher's output {before:.4g} -> {after:.4g}")
    print("after", args.target, recall(student, tokenizer, pairs, cfg))


if __name__ == "__main__":
    main()
