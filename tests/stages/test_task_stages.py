"""End-to-end runs of `pruneofa finetune`, `transfer` and `eval` on tiny random models and generated data."""

import csv
import json
import random

import pytest
import torch
import transformers
from safetensors.torch import load_file

from pruneofa.cli import main
from pruneofa.sparsity.config import DEFAULT_INCLUDE
from pruneofa.sparsity.masks import fold_state_dict
from pruneofa.sparsity.pruner import Pruner
from pruneofa.sparsity.selection import select_prunable

WORDS = "good bad great awful fine movie plot actor scene boring fun slow long short music".split()
SEQ = 32


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def classification_rows(seed, n, labels=("neg", "pos"), pair=False, regression=False):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = {"text": sentence(rng, 8)}
        if pair:
            row["other"] = sentence(rng, 5)
        row["y"] = round(rng.uniform(0, 5), 2) if regression else rng.choice(labels)
        rows.append(row)
    return rows


def squad_file(path, seed, n_questions):
    """Nested SQuAD v1.1 JSON: contexts long enough to need several windows; answers are real spans."""
    rng = random.Random(seed)
    paragraphs = []
    for p in range(n_questions // 2):
        context = sentence(rng, 50)
        qas = []
        for q in range(2):
            start_word = rng.randrange(40)
            words = context.split()
            answer = " ".join(words[start_word:start_word + 2])
            start = len(" ".join(words[:start_word])) + (1 if start_word else 0)
            qas.append({"id": f"q{p}-{q}", "question": f"which words follow {words[start_word - 1] if start_word else 'start'}?",
                        "answers": [{"text": answer, "answer_start": start}]})
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def args(model, out, **extra):
    """Overrides that shrink any task recipe to seconds."""
    base = {"model": model, "output_dir": out, "train.max_steps": 4, "train.batch_size": 8, "train.warmup_steps": 0,
            "train.log_every": 1, "train.save_every": 0, "train.eval_every": 0, "data.max_seq_len": SEQ}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def csv_task(files, **extra):
    return {"data.task": "csv", "data.train_file": files["train"], "data.validation_file": files["validation"],
            "data.text_columns": "[text]", "data.label_column": "y", **extra}


def history(out):
    step = (out / "checkpoints" / "latest").read_text().strip()
    return json.loads((out / "checkpoints" / step / "history.json").read_text())


def metrics(out):
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-data")
    return {
        "train": write_csv(root / "train.csv", classification_rows(0, 48)),
        "validation": write_csv(root / "val.csv", classification_rows(1, 12)),
        "test": write_csv(root / "test.csv", classification_rows(2, 10)),
        "pair_train": write_jsonl(root / "pair_train.jsonl", classification_rows(3, 48, ("a", "b", "c"), pair=True)),
        "pair_validation": write_jsonl(root / "pair_val.jsonl", classification_rows(4, 12, ("a", "b", "c"), pair=True)),
        "reg_train": write_csv(root / "reg_train.csv", classification_rows(5, 48, regression=True)),
        "reg_validation": write_csv(root / "reg_val.csv", classification_rows(6, 12, regression=True)),
        "qa_train": squad_file(root / "qa_train.json", 7, 24),
        "qa_validation": squad_file(root / "qa_val.json", 8, 8),
    }


@pytest.fixture(scope="module")
def sparse_bert(tiny_models, tmp_path_factory, tokenizer):
    """The tiny MLM BERT with 80% of every encoder Linear zeroed: a stand-in for a `prune` output."""
    model = transformers.AutoModelForMaskedLM.from_pretrained(tiny_models["bert"])
    Pruner(model, method="oneshot", target_sparsity=0.8, start_step=0).finalize()
    path = tmp_path_factory.mktemp("sparse") / "bert-80"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teacher(tiny_models, data, tmp_path_factory):
    """A dense task teacher fine-tuned on the single-sentence csv task, with a labelled test file."""
    out = tmp_path_factory.mktemp("teacher") / "ft"
    task = csv_task(data, **{"data.test_file": data["test"]})
    assert main(["finetune", *args(tiny_models["bert"], out, **task, **{"train.lr": 1e-3})]) == 0
    return out


def test_finetune_writes_classifier_with_labels_and_validation_and_test_metrics(teacher):
    m = metrics(teacher)
    assert {"validation/accuracy", "validation/macro_f1", "test/accuracy", "test/macro_f1", "sparsity"} <= set(m)
    assert m["sparsity"] == 0.0 and m["step"] == 4
    config = transformers.AutoConfig.from_pretrained(teacher)
    assert config.architectures == ["BertForSequenceClassification"] and config.id2label == {0: "neg", 1: "pos"}
    assert "kd" not in history(teacher)[0]  # no teacher: plain fine-tuning
    meta = json.loads((teacher / "pruneofa.json").read_text())
    assert meta["stage"] == "finetune" and meta["task"] == "csv" and meta["recipe"]["pruning"]["method"] == "none"


def test_transfer_locks_every_zero_while_the_nonzeros_move(sparse_bert, teacher, data, tmp_path):
    out = tmp_path / "sparse-ft"
    grouped = {"train.lr": 1e-2, "train.group_by_length": "true", "train.length_group_batches": 2}
    assert main(["transfer", *args(sparse_bert, out, teacher=teacher, **csv_task(data), **grouped)]) == 0
    before, after = load_file(str(sparse_bert / "model.safetensors")), load_file(str(out / "model.safetensors"))
    locked = select_prunable(transformers.AutoModelForSequenceClassification.from_pretrained(out), DEFAULT_INCLUDE, [])
    compared, zeros, total = 0, 0, 0
    for name in locked:
        key = f"{name}.weight"
        if key not in before:  # the pooler is new in a classifier (an MLM has none): nothing to keep
            continue
        w0, w1 = before[key], after[key]
        assert torch.equal(w0 == 0, w1 == 0), key  # exactly the same zeros, tensor by tensor
        assert not torch.allclose(w0[w0 != 0], w1[w1 != 0]), key  # while the kept weights trained
        compared, zeros, total = compared + 1, zeros + int((w1 == 0).sum()), total + w1.numel()
    assert compared == 2 * 6  # Q, K, V, attention output, FFN in and out of both layers
    assert zeros / total == pytest.approx(0.8, abs=0.01)
    assert metrics(out)["sparsity"] < zeros / total  # the reported figure counts the new, dense pooler too
    assert all("kd" in h for h in history(out) if "loss" in h)  # KD from the task teacher is on by default
    assert (after["classifier.weight"] != 0).all()  # the new head trains dense: it is not locked
    recipe = json.loads((out / "pruneofa.json").read_text())["recipe"]
    assert recipe["pruning"]["method"] == "lock" and recipe["train"]["group_by_length"]


def test_transfer_trains_the_new_head_alone_first_on_the_frozen_sparse_encoder(sparse_bert, teacher, data, tmp_path):
    out, steps = tmp_path / "probed", 3
    overrides = {"train.lr": 1e-2, "head.steps": steps, "head.lr": 1e-2}
    assert main(["transfer", *args(sparse_bert, out, teacher=teacher, **csv_task(data), **overrides)]) == 0
    student = load_file(str(sparse_bert / "model.safetensors"))
    probed = fold_state_dict(load_file(str(out / "head" / "checkpoints" / f"step-{steps}" / "model.safetensors")))
    final = load_file(str(out / "model.safetensors"))
    encoder = [k for k in student if k.startswith("bert.encoder.")]
    assert encoder and all(torch.equal(probed[k], student[k]) for k in encoder)  # frozen while the head trained
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(final[query], student[query])  # ... then trained, its zeros kept
    assert torch.equal(final[query] == 0, student[query] == 0)
    # the new tensors (the pooler is new too: an MLM checkpoint has none) trained in both phases
    for key in ("classifier.weight", "bert.pooler.dense.weight"):
        assert not torch.equal(probed[key], final[key]), key
    m = metrics(out)
    assert "head/validation/accuracy" in m and m["step"] == 4
    phase_tokens = [json.loads((d / "checkpoints" / f"step-{n}" / "state.json").read_text())["tokens"]
                    for d, n in ((out / "head", steps), (out, 4))]
    assert min(phase_tokens) > 0 and m["train_tokens"] == sum(phase_tokens)  # both phases count


def test_alpha_kd_zero_trains_without_teacher(sparse_bert, data, tmp_path):
    out = tmp_path / "no-kd"
    assert main(["transfer", *args(sparse_bert, out, teacher=tmp_path / "absent", **csv_task(data),
                                   **{"distill.alpha_kd": 0})]) == 0
    assert not any("kd" in h for h in history(out))


@pytest.mark.slow
def test_transfer_with_representation_kd_alone(sparse_bert, teacher, data, tmp_path):
    out = tmp_path / "representation-kd"
    kd = {"distill.alpha_kd": 0, "distill.alpha_hidden": 1, "distill.alpha_attention": 1,
          "distill.attention_layers": "[1,2]"}
    assert main(["transfer", *args(sparse_bert, out, teacher=teacher, **csv_task(data), **kd)]) == 0
    steps = [h for h in history(out) if "loss" in h]
    assert len(steps) == 4 and all("kd" not in h and h["hidden"] > 0 and h["attention"] > 0 for h in steps), steps
    for h in steps:
        assert h["loss"] == pytest.approx(0.5 * h["ce"] + h["hidden"] + h["attention"], rel=1e-4)
    assert "validation/accuracy" in metrics(out)


def test_teacher_of_another_width_is_refused_for_hidden_state_kd(capsys, sparse_bert, tokenizer, data, tmp_path):
    wide, out = tmp_path / "wide-teacher", tmp_path / "o"
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    transformers.BertForSequenceClassification(config).save_pretrained(wide)
    tokenizer.save_pretrained(wide)
    argv = ["transfer", *args(sparse_bert, out, teacher=wide, **csv_task(data), **{"distill.alpha_hidden": 1})]
    expect_refusal(capsys, argv, out, "hidden width to equal the teacher's (32 vs 48)")


@pytest.mark.parametrize("kind", ["pair-3-labels", "regression"])
def test_pair_and_regression_tasks_end_to_end(kind, tiny_models, teacher, data, tmp_path):
    out = tmp_path / kind
    start = tiny_models["bert"]
    if kind == "regression":
        task = csv_task({"train": data["reg_train"], "validation": data["reg_validation"]}, **{"data.regression": "true"})
    else:
        task = csv_task({"train": data["pair_train"], "validation": data["pair_validation"]},
                        **{"data.text_columns": "[text,other]"})
        start = teacher  # a 2-label classifier: its head is replaced by a 3-label one
    assert main(["finetune", *args(start, out, **task)]) == 0
    config = transformers.AutoConfig.from_pretrained(out)
    if kind == "regression":
        assert config.num_labels == 1 and config.problem_type == "regression"
        assert {"validation/pearson", "validation/spearman"} <= set(metrics(out))
    else:
        assert list(config.id2label.values()) == ["a", "b", "c"]
        assert {"validation/accuracy", "validation/macro_f1"} <= set(metrics(out))


def test_downstream_pruning_is_finetune_with_gmp(tiny_models, teacher, data, tmp_path):
    out = tmp_path / "gmp"
    prune = {"pruning.method": "gmp", "pruning.target_sparsity": 0.5, "pruning.target_step": 2, "pruning.frequency": 1}
    assert main(["finetune", *args(tiny_models["bert"], out, teacher=teacher, **csv_task(data), **prune)]) == 0
    assert metrics(out)["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert all("kd" in h for h in history(out) if "loss" in h)  # a teacher given: KD 0.5/0.5 by default


def test_qa_finetune_then_transfer_with_span_kd(tiny_models, sparse_bert, data, tmp_path):
    qa = {"data.task": "qa", "data.train_file": data["qa_train"], "data.validation_file": data["qa_validation"],
          "data.max_seq_len": 48, "data.doc_stride": 16}
    dense, sparse = tmp_path / "qa-dense", tmp_path / "qa-sparse"
    assert main(["finetune", *args(tiny_models["bert"], dense, **qa)]) == 0
    assert main(["transfer", *args(sparse_bert, sparse, teacher=dense, **qa)]) == 0
    for out in (dense, sparse):
        m = metrics(out)
        assert {"validation/exact_match", "validation/f1"} <= set(m) and 0 <= m["validation/f1"] <= 100
    assert transformers.AutoConfig.from_pretrained(sparse).architectures == ["BertForQuestionAnswering"]
    assert all("kd" in h for h in history(sparse) if "loss" in h)


def test_eval_reproduces_the_trained_metrics(teacher, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", str(teacher), "batch_size=8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((teacher / "eval_metrics.json").read_text())
    trained = metrics(teacher)
    assert printed == written and set(written) == set(trained) - {"step", "train_tokens"} | {"engine"}
    assert written.pop("engine") == "torch"
    for key, value in written.items():
        assert value == pytest.approx(trained[key], abs=1e-6), key
    assert main(["eval", str(teacher), "data.max_eval_samples=5", "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()).keys() == written.keys() | {"engine"}


@pytest.mark.parametrize("engine", ["ort", "sparse"])
def test_eval_through_a_deployment_engine_scores_like_pytorch(engine, teacher, tmp_path, capsys):
    """onnxruntime fp32 and the sparse fp32 kernels compute the same logits, so the same predictions."""
    out = tmp_path / f"{engine}.json"
    assert main(["eval", str(teacher), f"engine={engine}", "threads=1", "--output", str(out)]) == 0
    scored, trained = json.loads(out.read_text()), metrics(teacher)
    assert scored["engine"] == engine
    for key in ("validation/accuracy", "test/accuracy", "sparsity"):
        assert scored[key] == pytest.approx(trained[key], abs=1e-6), key


def test_eval_with_an_unknown_engine_is_refused_in_one_line(teacher, capsys):
    capsys.readouterr()
    assert main(["eval", str(teacher), "engine=tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "unknown engine 'tensorrt'" in err, err


def expect_refusal(capsys, argv, out, needle):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not out.exists()


def test_dataset_without_the_named_columns_is_refused(capsys, tiny_models, data, tmp_path):
    out = tmp_path / "o"
    task = csv_task(data, **{"data.text_columns": "[review]"})
    expect_refusal(capsys, ["finetune", *args(tiny_models["bert"], out, **task)], out, "no column(s) review")


def test_labels_outside_the_label_set_are_refused(capsys, tiny_models, data, tmp_path):
    out = tmp_path / "o"
    task = csv_task(data, **{"data.labels": "[neg,neutral]"})
    expect_refusal(capsys, ["finetune", *args(tiny_models["bert"], out, **task)], out, "labels not in data.labels")


def test_transfer_needs_a_teacher_or_no_kd(capsys, sparse_bert, data, tmp_path):
    out = tmp_path / "o"
    argv = ["transfer", *args(sparse_bert, out, **csv_task(data))] + ["teacher=null"]
    expect_refusal(capsys, argv, out, "distill.alpha_kd=0")


def test_teacher_of_another_label_set_is_refused(capsys, sparse_bert, teacher, data, tmp_path):
    out = tmp_path / "o"
    task = csv_task({"train": data["pair_train"], "validation": data["pair_validation"]})
    expect_refusal(capsys, ["transfer", *args(sparse_bert, out, teacher=teacher, **task)], out, "predicts labels")


def test_teacher_without_a_task_head_is_refused(capsys, sparse_bert, tiny_models, data, tmp_path):
    out = tmp_path / "o"
    argv = ["transfer", *args(sparse_bert, out, teacher=tiny_models["bert"], **csv_task(data))]
    expect_refusal(capsys, argv, out, "no trained task head")


def _transfer_inputs(sparse_bert, teacher, data, max_steps, **extra):
    from pruneofa.config.loader import parse_overrides
    from pruneofa.stages.registry import load_recipe
    from pruneofa.stages.task import load_training_inputs

    overrides = args(sparse_bert, "unused", teacher=teacher, **csv_task(data), **{"train.max_steps": max_steps},
                     **extra)
    recipe = load_recipe("transfer", None, parse_overrides(overrides))
    return (recipe, *load_training_inputs(recipe, trained_head=False))


def test_precomputed_teacher_logits_give_the_per_batch_objective(sparse_bert, teacher, data):
    """7 steps of 8 see 56 examples of 48: the teacher runs once per example instead, and the objective is the one
    the teacher run on each batch gives, to float rounding (the batches pad differently)."""
    from pruneofa.stages.task import precompute_teacher_logits, task_objective
    from pruneofa.tasks.adapters import TEACHER_LOGITS, batch_maker

    recipe, tokenizer, task, model, frozen, _ = _transfer_inputs(sparse_bert, teacher, data, max_steps=7)
    plain_batch = batch_maker(task.train, tokenizer, model)([0, 5, 9, 30])
    assert precompute_teacher_logits(recipe, task, frozen.eval(), 8, tokenizer)
    batch = batch_maker(task.train, tokenizer, model)([0, 5, 9, 30])
    assert set(batch) == set(plain_batch) | {TEACHER_LOGITS} and batch[TEACHER_LOGITS].shape == (4, 2)
    objective = task_objective(task, recipe.distill)
    torch.manual_seed(0)
    cached = objective(model.eval(), None, batch)  # no teacher at hand: the column must serve
    torch.manual_seed(0)
    per_batch = objective(model, frozen, plain_batch)
    assert TEACHER_LOGITS in batch  # the objective reads the column without consuming the loop's batch
    for key in ("loss", "ce", "kd"):
        torch.testing.assert_close(cached[key], per_batch[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["one-pass", "no-kd", "representation-kd"])
def test_teacher_logits_are_not_precomputed_where_they_would_not_pay_or_serve(case, sparse_bert, teacher, data):
    from pruneofa.stages.task import precompute_teacher_logits

    extra = {"one-pass": {}, "no-kd": {"distill.alpha_kd": 0.0, "distill.alpha_hidden": 1.0},
             "representation-kd": {"distill.alpha_hidden": 1.0}}[case]
    steps = 6 if case == "one-pass" else 7  # 6 x 8 examples: each of the 48 once
    recipe, tokenizer, task, model, frozen, _ = _transfer_inputs(sparse_bert, teacher, data, steps, **extra)
    assert not precompute_teacher_logits(recipe, task, frozen, 8, tokenizer)
    assert "teacher_logits" not in task.train.column_names
