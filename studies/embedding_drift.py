"""How far a pruned encoder's sentence embeddings sit from its teacher's, on the retrieval eval's texts.

    python studies/embedding_drift.py TEACHER_DIR STUDENT_DIR [STUDENT_DIR ...] [--json out.json]

For each held-out (title, summary) pair of `pruneofa eval MODEL retrieval` (the same split and pooling):
the mean cosine between the student's and the teacher's embedding of the same title and of the same summary,
and recall@1/@10 when the student's titles search the teacher's summaries and the other way round. Recall
can stay high while the cosines are low: the student keeps the neighbourhoods, not the coordinates.
"""

from __future__ import annotations

import argparse
import json

import torch

from pruneofa.models import load_tokenizer
from pruneofa.tasks.retrieval import RetrievalConfig, embed, gold_ranks, held_out_pairs, load_encoder, recall_at


def embeddings(name: str, pairs: list[tuple[str, str]], cfg: RetrievalConfig) -> tuple[torch.Tensor, torch.Tensor]:
    model, tokenizer = load_encoder(name), load_tokenizer(name)
    args = (cfg.max_seq_len, cfg.batch_size)
    return (embed(model, tokenizer, [t for t, _ in pairs], *args, desc="embed titles"),
            embed(model, tokenizer, [s for _, s in pairs], *args, desc="embed summaries"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher")
    parser.add_argument("students", nargs="+")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    cfg = RetrievalConfig()
    pairs = held_out_pairs(cfg)
    gold = torch.arange(len(pairs))
    t_titles, t_summaries = embeddings(args.teacher, pairs, cfg)
    rows = {}
    for name in args.students:
        s_titles, s_summaries = embeddings(name, pairs, cfg)
        rows[name] = {"cos_titles": float((s_titles * t_titles).sum(-1).mean()),
                      "cos_summaries": float((s_summaries * t_summaries).sum(-1).mean()),
                      "own": recall_at(gold_ranks(s_titles, s_summaries, gold)),
                      "student_titles_teacher_summaries": recall_at(gold_ranks(s_titles, t_summaries, gold)),
                      "teacher_titles_student_summaries": recall_at(gold_ranks(t_titles, s_summaries, gold))}
        print(name, json.dumps(rows[name]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"teacher": args.teacher, "queries": len(pairs), "students": rows}, f, indent=1)


if __name__ == "__main__":
    main()
