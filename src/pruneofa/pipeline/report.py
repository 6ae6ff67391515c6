"""The pipeline report: a Table-1-like comparison of the dense, sparse (and sparse+int8) task models,
a short generated reading, plots, and report.json with the same figures.

Every figure comes from a file a stage wrote (metrics.json, the weights, the training history); a
figure no stage produced is written as "not measured", never estimated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pruneofa.pipeline.retrieval_report import retrieval_rows, retrieval_section
from pruneofa.pipeline.schema import PipelineRecipe
from pruneofa.fileio import atomic_write_text
from pruneofa.train.checkpoint import latest_checkpoint

NOT_MEASURED = "not measured"
ROWS = [("dense", "dense (task teacher)"), ("sparse", "sparse (transfer)"), ("sparse_int8", "sparse + int8")]
METRIC_PREFERENCE = ["accuracy", "f1", "exact_match", "matthews", "pearson"]
TRAINING_STAGES = ("teacher", "prune", "finetune", "transfer")


# --- figures -----------------------------------------------------------------------------------

def primary_metric(metrics: dict[str, Any]) -> tuple[str, float] | tuple[None, None]:
    """The headline task metric: test split first, accuracy first."""
    for split in ("test", "validation"):
        for name in METRIC_PREFERENCE:
            key = f"{split}/{name}"
            if isinstance(metrics.get(key), (int, float)):
                return key, float(metrics[key])
    return None, None


def weights_size_mb(model_dir: Path, pattern: str = "model*.safetensors") -> float | None:
    files = sorted(model_dir.glob(pattern))
    return sum(f.stat().st_size for f in files) / 1e6 if files else None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def training_history(out: Path) -> list[dict[str, Any]]:
    """The history of the run's latest complete checkpoint (train/loop.py writes it into every checkpoint): the one
    a resume would continue from."""
    latest = latest_checkpoint(out)
    history = latest / "history.json" if latest is not None else None
    data = read_json(history) if history is not None and history.is_file() else []
    return data if isinstance(data, list) else []


# report row -> the `pruneofa bench` summary key of its engine (dense fp32 PyTorch, sparse fp32, sparse int8)
BENCH_LATENCY_KEYS = {"dense": "dense_fp32_ms", "sparse": "sparse_fp32_ms", "sparse_int8": "sparse_int8_ms"}


def bench_summary(bench_out: Path | None) -> dict[str, Any]:
    """The summary of a bench step's bench.json (`pruneofa bench`), or {} when no bench step ran."""
    return (read_json(bench_out / "bench.json").get("summary") or {}) if bench_out else {}


def latency_ms(summary: dict[str, Any], role: str) -> float | None:
    """Latency of the report row `role` at the bench's smallest batch, if the bench measured its engine."""
    value = summary.get(BENCH_LATENCY_KEYS[role])
    return float(value) if isinstance(value, (int, float)) else None


def bench_shape(summary: dict[str, Any]) -> str:
    """"b<batch> s<seq_len>" of the bench summary the latency column comes from."""
    return f"b{summary.get('batch', 1)} s{summary.get('seq_len', 128)}"


def step_dirs(out: Path) -> dict[str, Path]:
    state = read_json(out / "pipeline.json").get("steps", {})
    return {name: Path(rec["output"]) for name, rec in state.items()
            if rec.get("status") == "done" and rec.get("output")}


def exported_file(pipeline: PipelineRecipe, step: str, dirs: dict[str, Path]) -> tuple[float, str] | None:
    """Size (MB) and description of the last finished compressed export of `step`'s model, if any:
    the deployable file, where the zeros are not stored."""
    found = None
    for name, spec in pipeline.steps.items():
        if (spec.stage == "export" and name in dirs and spec.overrides.get("model") == f"${{{step}}}"
                and spec.overrides.get("format") == "compressed"):
            size = weights_size_mb(dirs[name], "*.safetensors")
            if size is not None:
                dtype = spec.overrides.get("dtype") or ("int8" if spec.overrides.get("int8") else "fp32")
                found = (size, f"compressed {dtype} ({name})")
    return found


def model_row(pipeline: PipelineRecipe, role: str, label: str, dirs: dict[str, Path],
              latency: float | None) -> dict[str, Any]:
    from pruneofa.modeldir import inspect_dir

    step = pipeline.step_for(role)
    row: dict[str, Any] = {"model": role, "label": label, "step": step, "dir": None, "metric": None, "accuracy": None,
                           "sparsity": None, "size_mb": None, "file": None, "latency_ms": None}
    if step is None or step not in dirs or not (dirs[step] / "pruneofa.json").is_file():
        return row
    d = dirs[step]
    metrics = read_json(d / "metrics.json")
    row["metric"], row["accuracy"] = primary_metric(metrics)
    exported = exported_file(pipeline, step, dirs)
    size, file = exported or (weights_size_mb(d), "model.safetensors")
    row.update(dir=str(d), sparsity=inspect_dir(d)["overall"], size_mb=size, file=file)
    row["latency_ms"] = latency
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    dense = rows[0]
    for row in rows:
        row["ratio"] = {}
        for key in ("accuracy", "size_mb", "latency_ms"):
            base, value = dense.get(key), row.get(key)
            row["ratio"][key] = value / base if value is not None and base else None


# --- text ----------------------------------------------------------------------------------------

def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return NOT_MEASURED
    return {"accuracy": f"{100 * value:.2f}", "sparsity": f"{100 * value:.1f}%", "size_mb": f"{value:.2f}",
            "latency_ms": f"{value:.2f}", "ratio": f"{value:.3f}x"}[kind]


def table_lines(rows: list[dict[str, Any]], shape: str = "b1 s128") -> list[str]:
    metric = next((r["metric"] for r in rows if r["metric"]), "test/accuracy")
    lines = [f"| model | {metric} (%) | vs dense | sparsity | file | size (MB) | vs dense | "
             f"latency {shape} (ms) | vs dense |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r.get("ratio", {})
        lines.append(f"| {r['label']} | {fmt(r['accuracy'], 'accuracy')} | {fmt(ratio.get('accuracy'), 'ratio')} | "
                     f"{fmt(r['sparsity'], 'sparsity')} | {r['file'] or NOT_MEASURED} | {fmt(r['size_mb'], 'size_mb')} | "
                     f"{fmt(ratio.get('size_mb'), 'ratio')} | {fmt(r['latency_ms'], 'latency_ms')} | "
                     f"{fmt(ratio.get('latency_ms'), 'ratio')} |")
    return lines


def reading(rows: list[dict[str, Any]]) -> list[str]:
    dense, sparse, int8 = rows
    text = []
    if dense["accuracy"] is not None and sparse["accuracy"] is not None:
        drop = 100 * (dense["accuracy"] - sparse["accuracy"])
        text.append(f"The sparse model ({fmt(sparse['sparsity'], 'sparsity')} of its prunable weights are zero) scores "
                    f"{fmt(sparse['accuracy'], 'accuracy')} on {sparse['metric']}, {100 * sparse['ratio']['accuracy']:.1f}% "
                    f"of the dense task teacher's {fmt(dense['accuracy'], 'accuracy')} "
                    f"({'a drop' if drop >= 0 else 'a gain'} of {abs(drop):.2f} points). The paper trains each stage "
                    "for far longer on far more data; short CPU runs usually widen the gap.")
    else:
        text.append("The dense or the sparse task model is missing, so accuracies cannot be compared.")
    if dense["size_mb"] and sparse["size_mb"]:
        if sparse["file"] == "model.safetensors":
            text.append(f"model.safetensors stores the zeros as ordinary numbers, so the sparse file is "
                        f"{sparse['ratio']['size_mb']:.2f}x the dense one: sparsity saves space only in a compressed "
                        "format (`pruneofa export --format compressed`: bitmask + non-zeros).")
        else:
            text.append(f"Stored as {sparse['file']}, the sparse model takes {fmt(sparse['size_mb'], 'size_mb')} MB, "
                        f"{1 / sparse['ratio']['size_mb']:.2f}x smaller than the dense model.safetensors.")
    if int8["size_mb"] and dense["size_mb"]:
        text.append(f"With int8 weights ({int8['file']}) the file is {1 / int8['ratio']['size_mb']:.2f}x smaller than "
                    "dense fp32; the word embeddings, which the method leaves dense, are most of what remains.")
    if int8["accuracy"] is None:
        text.append("No quantization step ran in this pipeline, so the sparse + int8 row is not measured.")
    if sparse["latency_ms"] is None:
        text.append("No benchmark step ran in this pipeline, so latency is not measured.")
    elif dense["latency_ms"]:
        faster = [f"{label} runs {dense['latency_ms'] / r['latency_ms']:.2f}x" for r, label in
                  ((sparse, "the sparse fp32 engine"), (int8, "the sparse int8 engine")) if r["latency_ms"]]
        text.append(f"Against dense fp32 PyTorch in the same benchmark run, {' and '.join(faster)} faster: its kernels skip the zeros, "
                    "which a dense framework multiplies.")
    return text


# --- plots ---------------------------------------------------------------------------------------

def _plots(pipeline: PipelineRecipe, dirs: dict[str, Path], rows: list[dict[str, Any]], layers: dict[str, float],
           report_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(report_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    prune_step = pipeline.step_for("pruning")
    history = training_history(dirs[prune_step]) if prune_step in dirs else []
    train_points = [h for h in history if "lr" in h]
    if train_points:
        fig, ax = plt.subplots(figsize=(7, 4))
        steps = [h["step"] for h in train_points]
        ax.plot(steps, [100 * h.get("sparsity", 0.0) for h in train_points], color="tab:red", marker=".", label="sparsity")
        ax.set_xlabel("step")
        ax.set_ylabel("sparsity (%)", color="tab:red")
        ax2 = ax.twinx()
        ax2.plot(steps, [h["lr"] for h in train_points], color="tab:blue", marker=".", label="learning rate")
        ax2.set_ylabel("learning rate", color="tab:blue")
        ax.set_title(f"student pruning ({prune_step}): GMP sparsity and rewound LR")
        save(fig, "pruning_schedule.png")

    curves = {name: [h for h in training_history(dirs[name]) if "loss" in h]
              for name, spec in pipeline.steps.items() if spec.stage in TRAINING_STAGES and name in dirs}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.5), squeeze=False)
        for ax, (name, points) in zip(axes[0], curves.items()):
            steps = [h["step"] for h in points]
            ax.plot(steps, [h["loss"] for h in points], label="loss")
            if any("kd" in h for h in points):
                ax.plot([h["step"] for h in points if "kd" in h], [h["kd"] for h in points if "kd" in h], label="KD loss")
            ax.set_title(f"{name} ({pipeline.steps[name].stage})")
            ax.set_xlabel("step")
            ax.legend()
        save(fig, "training_curves.png")

    if layers:
        fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(layers)), 4))
        names = list(layers)
        ax.bar(range(len(names)), [100 * layers[n] for n in names], color="tab:gray")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("encoder.layer.", "L").replace(".weight", "") for n in names],
                           rotation=90, fontsize=6)
        ax.set_ylabel("zeros (%)")
        ax.set_ylim(0, 100)
        ax.set_title("per-layer sparsity of the sparse task model")
        save(fig, "layer_sparsity.png")

    measured = [r for r in rows if r["accuracy"] is not None and r["size_mb"] is not None]
    if measured:
        fig, ax = plt.subplots(figsize=(5, 4))
        for r in measured:
            ax.scatter(r["size_mb"], 100 * r["accuracy"], s=60)
            ax.annotate(r["label"], (r["size_mb"], 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 5))
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel(f"{measured[0]['metric']} (%)")
        ax.set_title("accuracy vs file size")
        save(fig, "accuracy_vs_size.png")
    return written


# --- the report ----------------------------------------------------------------------------------

def build_report(pipeline: PipelineRecipe, out: Path) -> Path:
    """Write `<out>/report/{report.md, report.json, *.png}`; returns the report directory."""
    from pruneofa.modeldir import inspect_dir

    out = Path(out)
    dirs = step_dirs(out)
    bench = pipeline.step_for("bench")
    summary = bench_summary(dirs.get(bench) if bench else None)
    rows = [model_row(pipeline, role, label, dirs, latency_ms(summary, role)) for role, label in ROWS]
    add_ratios(rows)
    sparse_dir = rows[1]["dir"]
    layers = inspect_dir(sparse_dir)["layers"] if sparse_dir else {}
    evals = {name: read_json(dirs[name] / "eval_metrics.json") for name, spec in pipeline.steps.items()
             if spec.stage == "eval" and name in dirs}
    retrieval = retrieval_rows(pipeline, dirs)  # retrieval evals get their own table, not the eval-step list
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(pipeline, dirs, rows, layers, report_dir)
    text = reading(rows)
    state = read_json(out / "pipeline.json")
    report = {"rows": rows, "reading": text, "plots": plots, "eval": evals, "retrieval": retrieval, "layer_sparsity": layers,
              "not_measured": [f"{r['model']}.{k}" for r in rows for k in ("accuracy", "sparsity", "size_mb", "latency_ms")
                               if r[k] is None],
              "steps": {n: {k: rec.get(k) for k in ("stage", "status", "output", "seconds")}
                        for n, rec in state.get("steps", {}).items()}}
    atomic_write_text(report_dir / "report.json", json.dumps(report, indent=1))
    md = [f"# Prune Once for All: pipeline report ({out})", "",
          "Like the paper's Table 1: the task metric on the test split, overall sparsity of the prunable layers "
          "(pruneofa inspect), size of the file a deployment loads (model.safetensors, or the compressed export "
          "when the pipeline made one) and latency, each with its ratio to the dense model.", "",
          *table_lines(rows, bench_shape(summary)), "", *retrieval_section(retrieval), "## Reading", "",
          *[f"- {t}" for t in text], ""]
    if any(m.get("kind") != "retrieval" for m in evals.values()):
        md += ["## Eval steps", ""]
        md += [f"- {name}: " + ", ".join(f"{k} = {v:.4f}" for k, v in m.items() if isinstance(v, (int, float)))
               for name, m in evals.items() if m.get("kind") != "retrieval"]
        md.append("")
    md += ["## Steps", "", "| step | stage | status | seconds | output |", "|---|---|---|---|---|"]
    md += [f"| {n} | {s['stage']} | {s['status']} | {s['seconds']} | {s['output']} |" for n, s in report["steps"].items()]
    md += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    atomic_write_text(report_dir / "report.md", "\n".join(md))
    return report_dir
