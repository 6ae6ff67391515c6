"""Command line: `pruneofa STAGE [RECIPE] [key=value ...]` and the tools around the stages.

Bad input ends with one line on stderr (`error: <problem>; <fix>`) and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from pruneofa.config.loader import parse_overrides
from pruneofa.errors import UserError
from pruneofa.stages.registry import STAGES, TRAINING_STAGES, run_stage

def split_recipe_args(args: list[str]) -> tuple[str | None, dict[str, Any]]:
    """The first argument without '=' is the recipe; every key=value is an override (parsed here, once)."""
    recipe = None
    overrides = []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif recipe is None:
            recipe = arg
        else:
            raise UserError(f"unexpected argument '{arg}'", "pass one RECIPE followed by key=value overrides")
    return recipe, parse_overrides(overrides)


def _cmd_inspect(ns: argparse.Namespace) -> int:
    from pruneofa.modeldir import format_report, inspect_dir

    report = inspect_dir(ns.model_dir)
    print(json.dumps(report, indent=1) if ns.json else format_report(report))
    return 0


def _cmd_eval(ns: argparse.Namespace) -> int:
    from pruneofa.stages.eval import run_eval

    recipe, overrides = split_recipe_args(ns.args)
    metrics, path = run_eval(ns.model_dir, recipe, overrides, ns.output)
    print(json.dumps(metrics, indent=1))
    print(f"eval: wrote {path}", file=sys.stderr)
    return 0


def _cmd_recipes(ns: argparse.Namespace) -> int:
    from pruneofa.config.loader import shipped_recipes

    for name, path in shipped_recipes().items():
        header = next((ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"{name:<32} {header}")
    return 0


def _print_pipeline_end(state: dict, report_dir) -> None:
    from pruneofa.pipeline.report import table_lines
    from pruneofa.pipeline.retrieval_report import retrieval_table

    report = json.loads((report_dir / "report.json").read_text())
    print("\n".join(table_lines(report["rows"]) + retrieval_table(report.get("retrieval") or [])))
    print(f"report: {report_dir / 'report.md'}")


def _cmd_run(ns: argparse.Namespace) -> int:
    from pruneofa.pipeline.runner import run_pipeline

    recipe, overrides = split_recipe_args(ns.args)
    if recipe is None:
        raise UserError("no pipeline recipe given", "run: pruneofa run PIPELINE.yaml [key=value ...] (or pruneofa demo)")
    state, report_dir = run_pipeline(recipe, overrides, quick=ns.quick)
    _print_pipeline_end(state, report_dir)
    return 0


def _cmd_demo(ns: argparse.Namespace) -> int:
    from pruneofa.pipeline.runner import DEMO_RECIPE, run_pipeline

    overrides = parse_overrides(ns.overrides)
    if ns.output_dir:
        overrides["output_dir"] = ns.output_dir
    state, report_dir = run_pipeline(DEMO_RECIPE, overrides, quick=ns.quick)
    _print_pipeline_end(state, report_dir)
    return 0


def _cmd_export(ns: argparse.Namespace) -> int:
    from pruneofa.stages.export_cmd import run_export

    path = run_export(ns.model_dir, ns.format, ns.output_dir, ns.dtype, ns.int8, ns.compact, codec=ns.codec,
                      int8_embeddings=ns.int8_embeddings, dense_dtype=ns.dense_dtype)
    print(f"export: wrote {path}")
    return 0


def _cmd_bench(ns: argparse.Namespace) -> int:
    from pruneofa.bench.command import run_bench_command
    from pruneofa.bench.options import BenchOptions

    options = BenchOptions.parse(batch_sizes=ns.batch_sizes, seq_len=ns.seq_len, engines=ns.engines, rounds=ns.rounds,
                                 warmup=ns.warmup, threads=ns.threads, measure_memory=not ns.no_memory,
                                 baseline=ns.baseline, compact=ns.compact, encode=ns.encode,
                                 decode=ns.decode)
    print(run_bench_command(ns.model_dir, options, ns.json, ns.output_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser = argparse.ArgumentParser(prog="pruneofa", parents=[common],
                                     description="Prune Once for All: sparse pre-trained language models")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in TRAINING_STAGES:
        help_text = STAGES[name].help
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]",
                       help="a shipped recipe name or YAML path (default: the offline recipe), then overrides")
    p = sub.add_parser("inspect", help="per-layer and overall sparsity of a saved model", parents=[common])
    p.add_argument("model_dir")
    p.add_argument("--json", action="store_true", help='print {"overall": ..., "layers": {...}}')
    p = sub.add_parser("eval", help=STAGES["eval"].help, parents=[common])
    p.add_argument("model_dir")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]", help="an eval recipe, then overrides (data.*)")
    p.add_argument("--output", metavar="FILE", help="where to write the metrics JSON (default: MODEL_DIR/eval_metrics.json, "
                   "or eval_retrieval.json for the retrieval recipe)")
    sub.add_parser("recipes", help="list the shipped recipes")
    p = sub.add_parser("export", help=STAGES["export"].help, parents=[common])
    p.add_argument("model_dir")
    p.add_argument("--format", required=True, metavar="hf|compressed|onnx")
    p.add_argument("--output-dir", required=True, metavar="DIR")
    p.add_argument("--dtype", metavar="fp32|fp16|int8", help="value storage (compressed) or int8 QDQ (onnx)")
    p.add_argument("--int8", action="store_true", help="same as --dtype int8 (onnx: uses the QAT dir's scales)")
    p.add_argument("--codec", metavar="zstd|lzma|none", help="compressed: lossless entropy coding (default: zstd)")
    p.add_argument("--int8-embeddings", action="store_true",
                   help="compressed: embedding tables in int8 too (per-row scales; not trained for, so check accuracy)")
    p.add_argument("--dense-dtype", metavar="fp32|fp16", help="compressed: storage of the unpruned rest (default: fp32)")
    p.add_argument("--compact", action="store_true",
                   help="hf: drop zero attention heads and FFN neurons (structured pruning): a smaller dense model")
    from pruneofa.bench.options import BenchOptions as Defaults  # unset options (None) take these in parse()

    p = sub.add_parser("bench", help=STAGES["bench"].help, parents=[common])
    p.add_argument("model_dir")
    p.add_argument("--batch-sizes", metavar="1,8", help="comma-separated batch sizes "
                   f"(default: {','.join(map(str, Defaults.batch_sizes))})")
    p.add_argument("--seq-len", type=int, help=f"tokens per sequence (default: {Defaults.seq_len})")
    p.add_argument("--engines", metavar="a,b", help="comma-separated engines (default: all; torch fp32 always runs)")
    p.add_argument("--rounds", type=int, help=f"timed rounds, all engines interleaved (default: {Defaults.rounds})")
    p.add_argument("--warmup", type=int, help=f"untimed rounds first (default: {Defaults.warmup})")
    p.add_argument("--threads", type=int, help="threads of every engine (default: the CPUs this process may use)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a markdown table")
    p.add_argument("--output-dir", metavar="DIR", help="also write DIR/bench.json (atomically)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-engine peak-memory subprocesses")
    p.add_argument("--baseline", metavar="DIR", help="also time dense fp32 PyTorch on DIR in the same rounds and give "
                   "the speed-ups against it (e.g. the uncompacted model of an `export --compact` dir)")
    p.add_argument("--compact", action="store_true", help="benchmark MODEL_DIR rebuilt without its zero heads and "
                   "FFN neurons (as export --compact does), against MODEL_DIR itself as the baseline")
    p.add_argument("--encode", action="store_true", help="time sentence embeddings (tokenize, forward, pool as MODEL_DIR's "
                   "sentence-transformers config says) on torch, the runtime's engines and sentence-transformers")
    p.add_argument("--decode", action="store_true", help="causal LMs (GPT-2): time the prefill of --seq-len tokens and "
                   "the per-token decode step with the KV cache, on torch, torch-int8 and the sparse engines")
    p = sub.add_parser("run", help="run a pipeline recipe: its stages in order, resumable, then a report",
                       parents=[common])
    p.add_argument("args", nargs="*", metavar="PIPELINE [key=value]",
                   help="a pipeline YAML path or shipped name (demo), then overrides such as output_dir=... or "
                        "steps.prune.overrides.train.max_steps=100")
    p.add_argument("--quick", action="store_true", help="apply the recipe's quick: overrides (smaller step counts)")
    p = sub.add_parser("demo", help="the whole pipeline offline (recipes/pipeline/demo.yaml) and its report",
                       parents=[common])
    p.add_argument("--quick", action="store_true",
                   help="smaller step counts (about 4 min on 2 free CPU cores; full: 27-35, by CPU)")
    p.add_argument("--output-dir", metavar="DIR", help="where the steps and the report go (default: runs/demo)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="pipeline overrides, as for `pruneofa run`")
    return parser


def _quiet_libraries(verbose: bool) -> None:
    """Our progress bars and one-line errors only; the libraries' chatter with -v."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        import datasets  # its per-split map/cast bars drown the training bar of the task stages

        datasets.disable_progress_bars()


def _is_main_process() -> bool:
    # under torchrun every rank runs main(); only rank 0 reports
    import os

    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    ns = parser.parse_args(argv)
    _quiet_libraries(ns.verbose)
    try:
        if ns.command in TRAINING_STAGES:
            out = run_stage(ns.command, *split_recipe_args(ns.args))
            if _is_main_process():
                print(f"{ns.command}: wrote {out}")
            return 0
        commands = {"inspect": _cmd_inspect, "eval": _cmd_eval, "recipes": _cmd_recipes, "run": _cmd_run, "demo": _cmd_demo,
                    "export": _cmd_export, "bench": _cmd_bench}
        return commands[ns.command](ns)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _stop_requested() as stop:
        where = f"; checkpoint {stop.checkpoint}" if stop.checkpoint else ""
        print(f"stopped at step {stop.step}{where}; continue with resume=true", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`pruneofa recipes | head`): nothing left to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141  # 128 + SIGPIPE, as a shell reports it


def _stop_requested():
    from pruneofa.train.loop import StopRequested

    return StopRequested
