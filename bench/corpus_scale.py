"""The corpus on disk at scale (issue #12): memory, tokenizing throughput, a 1 GB corpus.

    .venv/bin/python bench/corpus_scale.py memory   [--sizes-mb 8 64] [--old-src DIR] [--steps 5]
    .venv/bin/python bench/corpus_scale.py tokenize [--size-mb 64] [--processes 1 2]
    .venv/bin/python bench/corpus_scale.py big      [--size-mb 1024] [--steps 10]

Corpora are generated: Wikipedia summaries of `offline/wiki-summaries`, drawn at random (seeded)
and written one per paragraph until the file has the size asked for; real English, so the
tokenizer works as on a real corpus. Everything goes under --workdir (default runs/corpus-bench/,
gitignored); `big` deletes its corpus and cache at the end.

memory    `pruneofa teacher offline` (MiniLM-L6, its new MLM head 2 steps then --steps updates of
          batch 8 x 128) on each size, each in a fresh subprocess: first with an empty cache
          (tokenizing included), then again with the cache built. Peak RSS is the subprocess's
          ru_maxrss from os.wait4 (its own and its tokenizing workers', the largest of them);
          peak anonymous memory (RssAnon, sampled every 0.1 s from /proc) is reported beside it,
          as RSS also counts pages of memory-mapped files. With --old-src (a checkout's src/ of
          the release before the cache) the same run is measured on that code too. Target: the
          largest peak RSS at most 1.25x the smallest.
tokenize  `prepare_blocks` of one corpus with 1 and 2 tokenizing processes (fresh caches, each in
          its own subprocess), then once more on the first cache: it must be reused, not rebuilt.
big       prepare + `pruneofa teacher` for --steps updates on a 1 GB corpus: wall time, peak RSS,
          the cache's size and build time.
Results: a table on stdout and JSON in --json (default bench/results/corpus_scale_<mode>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "offline/minilm-l6"


def generate_corpus(path: Path, size_mb: float, seed: int = 0) -> Path:
    """A .txt corpus of `size_mb` MB: random wiki summaries, one per paragraph."""
    target = int(size_mb * 1e6)
    if path.is_file() and path.stat().st_size >= target:
        return path
    from pruneofa.data.summaries import read_titled_summaries

    extracts = [text for _, text in read_titled_summaries("offline/wiki-summaries")]
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    written, tmp = 0, path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        while written < target:
            chunk = "\n\n".join(rng.choices(extracts, k=2000)) + "\n\n"
            fh.write(chunk)
            written += len(chunk.encode())
    tmp.replace(path)
    return path


class PeakAnon:
    """The largest RssAnon of one process, sampled from /proc while it runs."""

    def __init__(self, pid: int):
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def run_child(cmd: list[str], src: Path, log: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=err, stderr=subprocess.STDOUT, cwd=ROOT)
        anon = PeakAnon(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
    row = {"peak_rss_mib": usage.ru_maxrss / 1024, "peak_anon_mib": anon.stop(), "wall_s": time.perf_counter() - start,
           "cpu_s": usage.ru_utime + usage.ru_stime}
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {code}):\n{log.read_text()[-3000:]}")
    return row


def teacher_cmd(corpus: Path, out: Path, cache: Path, steps: int, new_code: bool) -> list[str]:
    overrides = [f"model={MODEL}", f"output_dir={out}", f"data.train_files=[{corpus}]", f"train.max_steps={steps}",
                 "train.batch_size=8", "train.seq_len=128", "train.warmup_steps=0", "train.save_every=0",
                 "train.eval_every=0", "train.eval_batches=1", f"train.log_every={steps}", "head.steps=2",
                 "overwrite=true"]
    if new_code:
        overrides.append(f"data.cache_dir={cache}")
    return [sys.executable, "-m", "pruneofa", "teacher", "offline", *overrides]


def mode_memory(args: argparse.Namespace, work: Path) -> dict:
    corpora = {size: generate_corpus(work / f"corpus-{size:g}mb.txt", size) for size in args.sizes_mb}
    codes = [("new", ROOT / "src")] + ([("old", Path(args.old_src).resolve())] if args.old_src else [])
    rows = []
    for size, corpus in corpora.items():
        for code, src in codes:
            cache = work / f"cache-{code}-{size:g}mb"
            shutil.rmtree(cache, ignore_errors=True)
            for phase in (("cold", "warm") if code == "new" else ("cold",)):
                cmd = teacher_cmd(corpus, work / f"teacher-{code}-{size:g}mb", cache, args.steps, code == "new")
                row = {"code": code, "size_mb": size, "phase": phase,
                       **run_child(cmd, src, work / f"teacher-{code}-{size:g}mb-{phase}.log")}
                rows.append(row)
                print(row, flush=True)
    lines = ["| code | corpus | cache | peak RSS (MiB) | peak RssAnon (MiB) | wall (s) |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['code']} | {r['size_mb']:g} MB | {r['phase'] if r['code'] == 'new' else 'none'} | "
                     f"{r['peak_rss_mib']:.0f} | {r['peak_anon_mib']:.0f} | {r['wall_s']:.0f} |")
    ratios = {}
    for code, _ in codes:
        for phase in ("cold", "warm"):
            peaks = {r["size_mb"]: r["peak_rss_mib"] for r in rows if r["code"] == code and r["phase"] == phase}
            if len(peaks) > 1:
                ratios[f"{code}-{phase}"] = peaks[max(peaks)] / peaks[min(peaks)]
    lines.append("")
    lines += [f"peak RSS {max(args.sizes_mb):g} MB / {min(args.sizes_mb):g} MB, {k}: {v:.3f}x (target <= 1.25x)"
              for k, v in ratios.items()]
    return {"rows": rows, "ratios": ratios, "target": 1.25, "steps": args.steps, "table": lines}


PREPARE = """
import json, sys, time
from transformers import AutoTokenizer
from pruneofa.data.assets import asset_path
from pruneofa.data.block_cache import prepare_blocks
from pruneofa.data.corpus import CorpusConfig
corpus, cache, processes = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(asset_path("offline/minilm-l6"))
start = time.perf_counter()
blocks = prepare_blocks(CorpusConfig(train_files=[corpus], cache_dir=cache, tokenize_processes=processes), tok, 128)
print(json.dumps({"seconds": time.perf_counter() - start, "built": blocks.built, "manifest": blocks.manifest}))
"""


def prepare(corpus: Path, cache: Path, processes: int, work: Path, tag: str) -> dict:
    log = work / f"prepare-{tag}.log"
    row = run_child([sys.executable, "-c", PREPARE, str(corpus), str(cache), str(processes)], ROOT / "src", log)
    result = json.loads(log.read_text().strip().splitlines()[-1])
    manifest = result["manifest"]
    tokens = sum(manifest["tokens"].values())
    return {"processes": processes, "built": result["built"], "seconds": result["seconds"],
            "tokenize_s": manifest["tokenize_seconds"] if result["built"] else 0.0, "tokens": tokens,
            "mb": corpus.stat().st_size / 1e6, **row}


def mode_tokenize(args: argparse.Namespace, work: Path) -> dict:
    corpus = generate_corpus(work / f"corpus-{args.size_mb:g}mb.txt", args.size_mb)
    rows = []
    for processes in args.processes:
        cache = work / f"cache-tokenize-{processes}"
        shutil.rmtree(cache, ignore_errors=True)
        rows.append(prepare(corpus, cache, processes, work, f"p{processes}"))
        print(rows[-1], flush=True)
    again = prepare(corpus, work / f"cache-tokenize-{args.processes[0]}", args.processes[0], work, "again")
    lines = ["| processes | tokenize (s) | whole build (s) | MB/s | tokens/s | peak RSS (MiB) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['processes']} | {r['tokenize_s']:.1f} | {r['seconds']:.1f} | {r['mb'] / r['tokenize_s']:.2f} | "
                     f"{r['tokens'] / r['tokenize_s']:,.0f} | {r['peak_rss_mib']:.0f} |")
    lines.append(f"\nsecond run on the same corpus: built={again['built']} in {again['seconds']:.2f} s "
                 f"(checksums verified, nothing tokenized)")
    return {"rows": rows, "again": again, "table": lines}


def mode_big(args: argparse.Namespace, work: Path) -> dict:
    corpus, cache, out = work / f"corpus-{args.size_mb:g}mb.txt", work / "cache-big", work / "teacher-big"
    try:
        start = time.perf_counter()
        generate_corpus(corpus, args.size_mb)
        generate_s = time.perf_counter() - start
        shutil.rmtree(cache, ignore_errors=True)
        row = run_child(teacher_cmd(corpus, out, cache, args.steps, True), ROOT / "src", work / "teacher-big.log")
        manifest = json.loads(next(cache.glob("*/manifest.json")).read_text())
        size = sum(f["bytes"] for f in manifest["files"].values())
        again = run_child(teacher_cmd(corpus, out, cache, args.steps, True), ROOT / "src", work / "teacher-big-again.log")
    finally:
        corpus.unlink(missing_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    result = {"corpus_mb": args.size_mb, "generate_s": generate_s, "first": row, "again": again,
              "cache_mb": size / 1e6, "build_s": manifest["build_seconds"], "tokenize_s": manifest["tokenize_seconds"],
              "processes": manifest["tokenize_processes"], "tokens": manifest["tokens"], "steps": args.steps}
    result["table"] = [
        f"{args.size_mb:g} MB corpus: {sum(manifest['tokens'].values()):,} tokens, cache {size / 1e6:,.0f} MB "
        f"({manifest['files']['train.npy']['shape'][0]:,} train blocks), built in {manifest['build_seconds']:.0f} s "
        f"(tokenizing {manifest['tokenize_seconds']:.0f} s, {manifest['tokenize_processes']} processes)",
        f"first run (build + {args.steps} steps): {row['wall_s']:.0f} s, peak RSS {row['peak_rss_mib']:,.0f} MiB "
        f"(RssAnon {row['peak_anon_mib']:,.0f} MiB)",
        f"second run (cache reused + {args.steps} steps): {again['wall_s']:.0f} s, peak RSS {again['peak_rss_mib']:,.0f} MiB "
        f"(RssAnon {again['peak_anon_mib']:,.0f} MiB)"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["memory", "tokenize", "big"])
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "corpus-bench"))
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[8, 64])
    parser.add_argument("--size-mb", type=float, default=None)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--old-src", help="src/ of the release before the cache, to measure it too")
    parser.add_argument("--json")
    args = parser.parse_args()
    args.size_mb = args.size_mb or (1024 if args.mode == "big" else 64)
    args.steps = args.steps or (10 if args.mode == "big" else 5)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    result = {"memory": mode_memory, "tokenize": mode_tokenize, "big": mode_big}[args.mode](args, work)
    print("\n".join(result["table"]))
    result.update({"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                   "load_average_at_end": os.getloadavg()})
    path = Path(args.json or ROOT / "bench" / "results" / f"corpus_scale_{args.mode}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    from pruneofa.fileio import atomic_write_text  # here: this parent imports no pruneofa (torch) up front

    atomic_write_text(path, json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
