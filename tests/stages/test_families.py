"""Every stage on a tiny random model of each encoder family of issue #14: ModernBERT (fused Wqkv, gated
GeGLU Wi, rotary, local/global attention), DeBERTa-v3 (disentangled attention) and XLM-RoBERTa.

One chain per family, run once (module scope): teacher -> prune (structured, one-shot) -> transfer to
a csv task -> quantize (QAT); each test then checks one stage's output, exports, eval or bench. A
tiny word-level vocabulary keeps the LM heads small, so a stage runs in about a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from pruneofa import Pruner
from pruneofa.cli import main
from pruneofa.modeldir import is_compact_dir, load_compressed, load_model, load_plain
from pruneofa.sparsity.config import DEFAULT_INCLUDE
from pruneofa.sparsity.groups import find_blocks
from pruneofa.sparsity.selection import select_prunable
from tests.conftest import ENCODER_FAMILIES, tiny_config, tiny_overrides
from tests.stages.test_task_stages import WORDS, args, classification_rows, csv_task, write_csv

LAYOUT = {"modernbert": "ModernBERT", "deberta-v2": "DeBERTa-v2/v3", "xlm-roberta": "BERT/RoBERTa/XLM-RoBERTa"}
# why the runtime's fused encoder leaves a family's blocks to PyTorch (None: it runs them)
UNFUSED = {"modernbert": "rotary position embeddings", "deberta-v2": "disentangled attention", "xlm-roberta": None}
STRUCTURED = {"pruning.pattern": "structured", "pruning.ffn_sparsity": 0.5, "pruning.head_sparsity": 0.5,
              "pruning.target_sparsity": 0.5}
ONE_SHOT = {"pruning.method": "oneshot", "pruning.target_step": 1, "train.max_steps": 2, "train.save_every": 0}


@dataclass
class Chain:
    family: str
    teacher: Path
    structured: Path
    transfer: Path
    qat: Path
    task: dict


def tiny_tokenizer(root: Path, corpus: Path) -> transformers.PreTrainedTokenizerBase:
    words = sorted(set(WORDS) | set(corpus.read_text().replace(".", " ").split()))
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"))


@pytest.fixture(scope="module", params=ENCODER_FAMILIES)
def chain(request, corpus_file, tmp_path_factory) -> Chain:
    family = request.param
    root = tmp_path_factory.mktemp(family)
    tokenizer = tiny_tokenizer(root, corpus_file)
    torch.manual_seed(0)
    transformers.AutoModelForMaskedLM.from_config(tiny_config(family, len(tokenizer))).save_pretrained(root / "init")
    tokenizer.save_pretrained(root / "init")
    task = csv_task({"train": write_csv(root / "train.csv", classification_rows(0, 32)),
                     "validation": write_csv(root / "val.csv", classification_rows(1, 12))},
                    **{"data.test_file": write_csv(root / "test.csv", classification_rows(2, 10))})
    runs = Chain(family, root / "teacher", root / "structured", root / "transfer", root / "qat", task)
    lm = {"train.max_steps": 2, "train.save_every": 0}
    assert main(["teacher", *tiny_overrides(root / "init", corpus_file, runs.teacher, **lm)]) == 0
    assert main(["prune", *tiny_overrides(runs.teacher, corpus_file, runs.structured, **ONE_SHOT, **STRUCTURED)]) == 0
    no_kd = {"distill.alpha_kd": 0, "train.max_steps": 2}  # KD from a task teacher is the same for every family
    assert main(["transfer", *args(runs.structured, runs.transfer, **task, **no_kd)]) == 0
    assert main(["quantize", *args(runs.transfer, runs.qat, **task, **no_kd, **{"train.lr": 1e-2})]) == 0
    return runs


def blocks_of(model):
    return find_blocks(model, select_prunable(model, DEFAULT_INCLUDE, []))


def zero_groups(block, layers) -> tuple[int, int]:
    """(heads, FFN neurons) of `block` whose output-side columns are all zero."""
    counts = []
    for groups in (block.heads, block.ffn):
        member = groups.output_side[0]
        columns = (layers[member.layer].weight == 0).all(dim=0)
        counts.append(int(columns[member.index].all(dim=-1).sum()))
    return tuple(counts)


def encoder_zeros(path: Path) -> dict[str, torch.Tensor]:
    model = load_plain(path)
    return {n: m.weight == 0 for n, m in select_prunable(model, DEFAULT_INCLUDE, []).items() if "pooler" not in n}


def inputs(tokenizer_dir: Path) -> dict[str, torch.Tensor]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = tokenizer(["good movie plot", "the boring actor scene was slow and long, awful music"], padding=True,
                      return_tensors="pt")
    return {k: v for k, v in batch.items() if k != "token_type_ids"}


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_structured_prune_removes_whole_heads_and_neurons_of_every_block(chain):
    model = load_plain(chain.structured)
    blocks = blocks_of(model)
    assert [b.layout.family for b in blocks] == [LAYOUT[chain.family]] * 2
    layers = dict(model.named_modules())
    for block in blocks:  # half of 4 heads, half of 64 FFN neurons
        assert zero_groups(block, layers) == (2, 32)


@pytest.mark.parametrize("pattern", ["unstructured", "block:1x4", "nm:2:4", "hybrid"])
def test_every_pattern_prunes_the_family_blocks(chain, pattern):
    model = load_plain(chain.teacher)
    groups = {"ffn_sparsity": 0.5, "head_sparsity": 0.5} if pattern == "hybrid" else {}
    target = 0.5 if pattern == "nm:2:4" else 0.75
    pruner = Pruner(model, method="oneshot", pattern=pattern, target_sparsity=target, start_step=0, **groups)
    pruner.finalize()
    assert pruner.overall_sparsity() == pytest.approx(target, abs=0.01)
    for name, module in pruner.layers.items():
        keep = module.weight != 0
        if pattern == "block:1x4":  # whole 1x4 tiles of the (out, in) weight go
            tiles = keep.view(keep.shape[0], -1, 4)
            assert (tiles.all(-1) | ~tiles.any(-1)).all(), name
        elif pattern == "nm:2:4":  # at most 2 of every 4 consecutive inputs stay
            assert (keep.view(keep.shape[0], -1, 4).sum(-1) <= 2).all(), name
    if pattern == "hybrid":
        layers = dict(model.named_modules())
        assert all(zero_groups(b, layers) == (2, 32) for b in blocks_of(model))


def test_transfer_and_quantize_keep_the_structured_zeros(chain):
    pruned, transferred, quantized = (encoder_zeros(p) for p in (chain.structured, chain.transfer, chain.qat))
    assert pruned.keys() == transferred.keys() == quantized.keys()
    assert len(pruned) == 2 * (4 if chain.family == "modernbert" else 6)  # fused Wqkv; gated Wi
    for name, zeros in pruned.items():
        assert torch.equal(zeros, transferred[name]) and torch.equal(zeros, quantized[name]), name
    assert (chain.qat / "qat_state.safetensors").is_file()


def test_compact_export_computes_the_masked_models_outputs(chain, tmp_path):
    out = tmp_path / "compact"
    assert main(["export", str(chain.transfer), "--format", "hf", "--compact", "--output-dir", str(out)]) == 0
    masked, batch = load_plain(chain.transfer), inputs(chain.transfer)
    config = json.loads((out / "config.json").read_text())
    assert is_compact_dir(out) and config["compact"]["attention_heads"] == [2, 2]
    assert config["compact"]["ffn_sizes"] == [32, 32]
    for compact in (load_plain(out),
                    transformers.AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)):
        assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in masked.parameters())
        torch.testing.assert_close(logits(compact, batch), logits(masked, batch), rtol=1e-5, atol=1e-5)


def test_hf_and_compressed_exports_give_the_trained_models_outputs(chain, tmp_path):
    batch, expected = inputs(chain.transfer), logits(load_plain(chain.transfer), inputs(chain.transfer))
    assert main(["export", str(chain.transfer), "--format", "hf", "--output-dir", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    torch.testing.assert_close(logits(hf, batch), expected, rtol=1e-6, atol=1e-6)
    assert main(["export", str(chain.transfer), "--format", "compressed", "--output-dir", str(tmp_path / "c")]) == 0
    torch.testing.assert_close(logits(load_compressed(tmp_path / "c"), batch), expected, rtol=1e-6, atol=1e-6)
    int8_export = ["--format", "compressed", "--int8", "--output-dir", str(tmp_path / "q")]
    assert main(["export", str(chain.qat), *int8_export]) == 0
    assert main(["export", str(chain.qat), "--format", "hf", "--output-dir", str(tmp_path / "qat-hf")]) == 0
    int8, dequantized = dict(load_compressed(tmp_path / "q").named_modules()), load_plain(tmp_path / "qat-hf")
    for name, zeros in encoder_zeros(chain.structured).items():
        weight = int8[name].weight
        assert not weight[zeros].any(), name  # every pruned weight stays 0 (small ones may round to 0 too)
        # int8 values with the QAT scales: the weights the QAT model computes with
        torch.testing.assert_close(weight, dequantized.get_submodule(name).weight, rtol=0, atol=1e-6)


@pytest.mark.slow  # two dynamo exports: ~10 s each on a quiet 2-core machine
def test_onnx_exports_run_in_onnxruntime(chain, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    batch = inputs(chain.transfer)
    assert main(["export", str(chain.transfer), "--format", "onnx", "--output-dir", str(tmp_path / "fp32")]) == 0
    assert main(["export", str(chain.qat), "--format", "onnx", "--int8", "--output-dir", str(tmp_path / "int8")]) == 0
    # fp32: the trained model's logits; int8 (QDQ with the QAT scales): the QAT model's, to int8 rounding
    for name, source, tolerance in (("fp32", chain.transfer, 1e-4), ("int8", chain.qat, 0.1)):
        expected = logits(load_model(source)[0], batch).numpy()
        session = ort.InferenceSession(str(tmp_path / name / "model.onnx"), providers=["CPUExecutionProvider"])
        feed = {i.name: batch[i.name].numpy() if i.name in batch else np.zeros_like(batch["input_ids"].numpy())
                for i in session.get_inputs()}
        (out,) = session.run(None, feed)
        assert np.abs(out - expected).max() <= tolerance * max(1.0, np.abs(expected).max()), name


def test_eval_scores_the_transfer_and_qat_models(chain):
    for model in (chain.transfer, chain.qat):
        assert main(["eval", str(model)]) == 0
        scored, trained = (json.loads((model / f).read_text()) for f in ("eval_metrics.json", "metrics.json"))
        assert scored["validation/accuracy"] == pytest.approx(trained["validation/accuracy"], abs=1e-6)


def test_bench_runs_the_sparse_engines_and_says_which_blocks_stay_in_pytorch(chain, tmp_path, capsys):
    capsys.readouterr()
    assert main(["bench", str(chain.transfer), "--engines", "sparse,sparse-int8", "--seq-len", "16", "--rounds", "1",
                 "--warmup", "0", "--no-memory", "--threads", "1", "--output-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {r["engine"] for r in rows} == {"torch", "sparse", "sparse-int8"}
    assert all(r["matches_reference"] for r in rows)
    for row in rows[1:]:
        assert "sparse" in row["layers"]  # the Linear layers run the sparse kernels either way
        if UNFUSED[chain.family] is None:
            assert not row["unfused"] and "1 fused encoder(s)" in row["layers"]
        else:
            assert UNFUSED[chain.family] in row["unfused"][0] and "2 " + LAYOUT[chain.family] in row["unfused"][0]
            assert f"{row['engine']}: PyTorch runs between its Linear kernels in 2 {LAYOUT[chain.family]}" in table
