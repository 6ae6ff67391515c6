"""The fast path: mixed precision, TF32, fused AdamW, torch.compile, and the FSDP refusals a single process can see."""

import json

import pytest
import torch
from torch import nn

from pruneofa.cli import main
from pruneofa.train import performance
from pruneofa.train.loop import fit
from tests.conftest import tiny_overrides
from tests.train.test_checkpoint import tiny_job

PRUNE = {"pruning.target_sparsity": 0.5, "pruning.target_step": 2, "pruning.stop_step": 2, "pruning.frequency": 1,
         "train.max_steps": 4, "train.save_every": 0}


def losses_by_precision(tiny_models, corpus_file, tmp_path, *precisions):
    """The logged losses of the same 4-update prune of the tiny BERT at each precision."""
    runs = {}
    for precision in precisions:
        out = tmp_path / precision
        args = tiny_overrides(tiny_models["bert"], corpus_file, out, **PRUNE, **{"train.precision": precision})
        assert main(["prune", *args]) == 0
        history = json.loads((out / "checkpoints/step-4/history.json").read_text())
        runs[precision] = [h["loss"] for h in history if "loss" in h]
    return runs


@pytest.mark.slow
def test_bf16_autocast_trains_like_fp32_on_cpu(tiny_models, corpus_file, tmp_path):
    runs = losses_by_precision(tiny_models, corpus_file, tmp_path, "fp32", "bf16")
    assert all(torch.isfinite(torch.tensor(runs["bf16"])))
    assert runs["bf16"] != runs["fp32"]  # autocast did run in bf16 ...
    assert runs["bf16"] == pytest.approx(runs["fp32"], rel=2e-2)  # ... and trains the same model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a gradient scaler needs a CUDA GPU")
def test_fp16_with_gradient_scaler_trains_on_cuda(tiny_models, corpus_file, tmp_path):
    runs = losses_by_precision(tiny_models, corpus_file, tmp_path, "fp32", "fp16")
    assert all(torch.isfinite(torch.tensor(runs["fp16"])))
    assert runs["fp16"] == pytest.approx(runs["fp32"], rel=2e-2)


def test_adamw_is_fused_on_cpu_and_cuda_and_steps_like_the_multi_tensor_path():
    torch.manual_seed(0)
    start, grads = torch.randn(64, 8), [torch.randn(64, 8) for _ in range(3)]
    trained = {}
    for path in ("fused", "foreach"):
        weight = nn.Parameter(start.clone())
        groups = [{"params": [weight], "weight_decay": 0.01}]
        optimizer = (performance.adamw(groups, 1e-2, torch.device("cpu")) if path == "fused"
                     else torch.optim.AdamW(groups, lr=1e-2, foreach=True))
        assert bool(optimizer.defaults["fused"]) is (path == "fused")
        for grad in grads:
            weight.grad = grad.clone()
            optimizer.step()
        trained[path] = weight.detach()
    torch.testing.assert_close(trained["fused"], trained["foreach"])
    assert not torch.equal(trained["fused"], start)
    if torch.cuda.is_available():
        cuda_groups = [{"params": [nn.Parameter(torch.ones(2, 2, device="cuda"))], "weight_decay": 0.0}]
        assert performance.adamw(cuda_groups, 1e-3, torch.device("cuda")).defaults["fused"] is True


def test_tf32_is_allowed_on_cuda_only():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        performance.allow_tf32(torch.device("cpu"))
        assert torch.get_float32_matmul_precision() == "highest"
        performance.allow_tf32(torch.device("cuda"))  # only sets flags: needs no GPU
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


@pytest.mark.slow
def test_compile_traces_the_model_and_trains_like_eager(tmp_path, monkeypatch):
    # dynamo traces for real; the eager backend skips inductor's C++ build (minutes on a CPU) and
    # must then compute exactly what the uncompiled model does
    monkeypatch.setattr(performance, "COMPILE_BACKEND", "eager")
    plain = tiny_job(tmp_path / "plain")
    compiled = tiny_job(tmp_path / "compiled")
    compiled.config = compiled.config.model_copy(update={"compile": True, "max_steps": 3})
    plain.config = plain.config.model_copy(update={"max_steps": 3})
    a, b = fit(plain), fit(compiled)
    assert compiled.model._compiled_call_impl is not None and plain.model._compiled_call_impl is None
    assert [h["loss"] for h in b.history] == pytest.approx([h["loss"] for h in a.history], rel=1e-5)


@pytest.mark.parametrize("override,needle", [
    ("pruning.criterion=obs", "pruning.criterion=obs reads whole gradients"),
    ("train.precision=fp16", "train.sharding=fsdp takes train.precision=bf16 or fp32"),
])
def test_fsdp_refuses_what_it_cannot_shard_before_anything_is_written(capsys, tiny_models, corpus_file, tmp_path,
                                                                      override, needle):
    out = tmp_path / "o"
    args = tiny_overrides(tiny_models["bert"], corpus_file, out, **PRUNE,
                          **{"train.sharding": "fsdp", "pruning.obs_num_grads": 1})
    capsys.readouterr()
    assert main(["prune", *args, override]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and needle in err, err
    assert not out.exists()


def test_fsdp_on_one_process_trains_unsharded(tmp_path):
    job = tiny_job(tmp_path / "one")
    job.config = job.config.model_copy(update={"sharding": "fsdp", "max_steps": 2})
    assert fit(job).step == 2  # no process group, and none needed: one process has nothing to shard


@pytest.mark.slow
def test_gpu_throughput_benchmark_runs_on_cpu_with_a_tiny_shape(monkeypatch, tmp_path):
    """bench/gpu_prune_throughput.py, ready for a GPU session: a CPU smoke run of its three steps."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import gpu_prune_throughput

    sys.modules.pop("gpu_prune_throughput", None)
    result = gpu_prune_throughput.main(["--shape", "tiny", "--batch-size", "2", "--seq-len", "16", "--steps", "2",
                                        "--warmup", "1", "--against-fp32", "--json", str(tmp_path / "r.json")])
    assert set(result["tokens_per_s"]) == {"mlm", "masked", "prune", "prune-fp32"}
    assert min(result["tokens_per_s"].values()) > 0 and result["prune_speedup_vs_fp32"] > 0
    assert result["mfu"] is None  # no known peak on a CPU
    assert set(result["overhead_vs_mlm"]) == {"masked", "prune", "prune-fp32"}
    assert json.loads((tmp_path / "r.json").read_text())["shape"] == "tiny"
    # model FLOPs: 6 per weight of every matmul the model trains (the MLM head included) and token, + attention
    import transformers

    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64)
    model = transformers.BertForMaskedLM(config)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert gpu_prune_throughput.train_flops_per_token(config, 16) == 6 * weights + 12 * 2 * 16 * 32


def test_attention_dropout_benchmark_times_each_variant(monkeypatch, tmp_path):
    """bench/attention_dropout_cost.py on a tiny shape: every variant timed, forward and with backward, and its
    --json file holds what it returned."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import attention_dropout_cost

    result = attention_dropout_cost.main(["--batch-size", "2", "--seq-len", "8", "--heads", "2", "--head-dim", "4",
                                          "--rounds", "2", "--warmup", "0", "--json", str(tmp_path / "r.json")])
    variants = ("sdpa", "sdpa-dropout", "eager-dropout", "packed-dropout")
    assert set(result["median_ms"]) == {f"{v} {p}" for v in variants for p in ("forward", "forward+backward")}
    assert all(ms > 0 for ms in result["median_ms"].values())
    assert json.loads((tmp_path / "r.json").read_text()) == result


def test_optimizer_benchmark_times_each_adamw_path(monkeypatch, tmp_path):
    """bench/optimizer_step.py: foreach, fused and for-loop AdamW stepped over the MiniLM's parameters, and its
    --json file holds what it returned."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import optimizer_step

    result = optimizer_step.main(["--rounds", "1", "--warmup", "0", "--threads", "1", "--json", str(tmp_path / "r.json")])
    assert result["parameters"] > 22_000_000 and set(result["median_ms"]) == {"foreach", "fused", "for-loop"}
    assert result["vs_fused"]["fused"] == 1.0 and all(ms > 0 for ms in result["median_ms"].values())
    assert json.loads((tmp_path / "r.json").read_text()) == result
