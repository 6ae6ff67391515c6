"""`pruneofa run PIPELINE.yaml [key=value]`: run the steps of a pipeline recipe in order, resumably.

Progress lives in `<output_dir>/pipeline.json` (written atomically after every change). On a re-run:

- a step that finished (pipeline.json says done and its output is complete) with the same arguments,
  and whose inputs were not re-made in this run, is skipped;
- a finished step whose arguments or inputs changed is re-made with overwrite=true;
- an unfinished step is re-run with resume=true when its output dir holds a started run (it
  continues from its last checkpoint), or with overwrite=true when its arguments changed.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pruneofa.config.loader import apply_overrides, load_yaml, recipes_dir, text_values_parsed
from pruneofa.errors import UserError
from pruneofa.pipeline.commands import COMMANDS, run_command
from pruneofa.pipeline.schema import REF, PipelineRecipe, validate_pipeline
from pruneofa.stages.registry import STAGES, recipe_data, run_stage
from pruneofa.fileio import atomic_write_text

STATE_FILE = "pipeline.json"
DEMO_RECIPE = "demo"
DEFAULT_SECONDS_PER_UNIT = 1.0 / (8 * 128)  # MiniLM-L6 MLM on 2 free CPU cores: ~1 s per 8x128-token step
STAGE_OVERHEAD_UNITS = 20 * 8 * 128  # loading models and data, final evaluation: ~20 s of a free machine per stage


def find_pipeline(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"pipeline recipe '{name}' not found", "pass an existing YAML path or a shipped name (demo)")
        return path
    shipped = recipes_dir() / "pipeline" / f"{name.removeprefix('pipeline/')}.yaml"
    if not shipped.is_file():
        names = sorted(p.stem for p in (recipes_dir() / "pipeline").glob("*.yaml"))
        raise UserError(f"no pipeline recipe '{name}'", f"use a YAML path or one of: {', '.join(names)}")
    return shipped


def load_pipeline(name: str, overrides: dict[str, Any] | None = None) -> tuple[PipelineRecipe, Path]:
    """The validated pipeline recipe (shipped name or YAML path, then {dotted key: value} overrides) and its path."""
    path = find_pipeline(name)
    return validate_pipeline(apply_overrides(load_yaml(path), dict(overrides or {}))), path


# --- resolving steps ---------------------------------------------------------------------------

def step_output(pipeline: PipelineRecipe, name: str) -> Path:
    explicit = pipeline.steps[name].overrides.get("output_dir")
    return Path(explicit) if explicit else Path(pipeline.output_dir) / name


def resolve_step(pipeline: PipelineRecipe, name: str, quick: bool) -> dict[str, Any]:
    """The step's overrides with ${step} references replaced by output dirs and its output_dir set."""
    spec = pipeline.steps[name]
    merged = {**spec.overrides, **(pipeline.quick.get(name, {}) if quick else {})}

    def subst(value: Any) -> Any:
        if isinstance(value, str):
            return REF.sub(lambda m: str(step_output(pipeline, m.group(1))), value)
        if isinstance(value, list):
            return [subst(v) for v in value]
        return value

    resolved = {k: subst(v) for k, v in merged.items()}
    resolved["output_dir"] = str(step_output(pipeline, name))
    if spec.stage in COMMANDS and "model" not in resolved:
        raise UserError(f"step '{name}' ({spec.stage}) has no model",
                        "set overrides: {model: ${step}} to the model it works on")
    return resolved


def inputs_of(pipeline: PipelineRecipe, name: str, quick: bool) -> set[str]:
    spec = pipeline.steps[name]
    merged = {**spec.overrides, **(pipeline.quick.get(name, {}) if quick else {})}
    found: set[str] = set()
    for value in merged.values():
        for v in value if isinstance(value, list) else [value]:
            found.update(REF.findall(v) if isinstance(v, str) else [])
    return found


def is_complete(stage: str, out: Path) -> bool:
    return (out / STAGES[stage].marker).is_file()


# --- cost estimate for the ETA line ------------------------------------------------------------

def estimate_units(stage: str, recipe: str | None, values: dict[str, Any]) -> float:
    """Rough cost of a step in token-steps (x1.3 with a KD teacher) plus a fixed start-up cost; the ETA
    scales the sum by the seconds per unit measured on the finished steps of this run."""
    if stage in COMMANDS:
        return 3 * STAGE_OVERHEAD_UNITS
    try:
        data = recipe_data(stage, recipe, text_values_parsed(values))
        train = data.get("train", {})
        seq = train.get("seq_len") or (data.get("data") or {}).get("max_seq_len") or 128
        units = float(train.get("max_steps", 1000)) * train.get("batch_size", 32) * seq
        distill = data.get("distill") or {}
        with_teacher = stage == "prune" or (data.get("teacher") and distill.get("alpha_kd", 0.5) > 0)
        return units * (1.3 if with_teacher else 1.0) + STAGE_OVERHEAD_UNITS
    except (UserError, TypeError, ValueError):
        return STAGE_OVERHEAD_UNITS


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# --- the runner --------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_step(stage: str, recipe: str | None, values: dict[str, Any]) -> Path:
    """Run one step in this process, exactly as `pruneofa STAGE [RECIPE] key=value ...` (or the command) would."""
    if stage in COMMANDS:
        return run_command(stage, recipe, values)
    return run_stage(stage, recipe, text_values_parsed(values))


class PipelineRunner:
    def __init__(self, pipeline: PipelineRecipe, source: Path, quick: bool = False,
                 log: Callable[[str], None] | None = None,
                 step_fn: Callable[[str, str | None, dict[str, Any]], Path] = run_step):
        self.pipeline, self.source, self.quick = pipeline, source, quick
        self.out = Path(pipeline.output_dir)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.step_fn = step_fn
        self.state = self._load_state()

    def _load_state(self) -> dict[str, Any]:
        path = self.out / STATE_FILE
        if path.is_file():
            try:
                state = json.loads(path.read_text())
                if isinstance(state.get("steps"), dict):
                    return state
            except json.JSONDecodeError:
                pass
        return {"steps": {}}

    def save_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.state.update({"recipe": str(self.source), "output_dir": str(self.out), "quick": self.quick,
                           "order": list(self.pipeline.steps), "updated": _now()})
        atomic_write_text(self.out / STATE_FILE, json.dumps(self.state, indent=1))

    def plan(self) -> list[dict[str, Any]]:
        """What each step will do: skip, run, resume or redo (overwrite)."""
        plan, remade = [], set()
        for name, spec in self.pipeline.steps.items():
            values = resolve_step(self.pipeline, name, self.quick)
            out = Path(values["output_dir"])
            record = self.state["steps"].get(name, {})
            same = record.get("values") == values and record.get("recipe") == spec.recipe
            upstream = bool(inputs_of(self.pipeline, name, self.quick) & remade)
            done = record.get("status") == "done" and is_complete(spec.stage, out)
            user_set = {"resume", "overwrite"} & set(values)
            if done and same and not upstream:
                action = "skip"
            elif spec.stage in COMMANDS or user_set:
                action = "run"
            elif done or (record and not same) or (upstream and (out / "run.json").is_file()):
                action = "redo"
            elif (out / "run.json").is_file():
                action = "resume"
            else:
                action = "run"
            if action != "skip":
                remade.add(name)
            plan.append({"name": name, "stage": spec.stage, "recipe": spec.recipe, "values": values, "out": out,
                         "action": action, "units": estimate_units(spec.stage, spec.recipe, values)})
        return plan

    def run(self) -> dict[str, Any]:
        plan = self.plan()
        self.save_state()
        started = time.monotonic()
        measured_units = measured_seconds = 0.0
        for i, step in enumerate(plan, 1):
            name, stage, record = step["name"], step["stage"], self.state["steps"].get(step["name"], {})
            head = f"[pipeline] step {i}/{len(plan)} {name} ({stage})"
            if step["action"] == "skip":
                self.log(f"{head}: done in an earlier run, skipped ({step['out']})")
                continue
            rate = measured_seconds / measured_units if measured_units else DEFAULT_SECONDS_PER_UNIT
            remaining = sum(s["units"] for s in plan[i - 1:] if s["action"] != "skip") * rate
            how = {"resume": ", resuming from its last checkpoint", "redo": ", re-made (its inputs or arguments changed)"}
            self.log(f"{head}{how.get(step['action'], '')} — elapsed {fmt_seconds(time.monotonic() - started)}, "
                     f"ETA {fmt_seconds(remaining)}{'' if measured_units else ' (a first guess)'}")
            values = dict(step["values"])
            if step["action"] == "resume":
                values["resume"] = True
            elif step["action"] == "redo":
                values["overwrite"] = True
            record = {"stage": stage, "recipe": step["recipe"], "values": step["values"], "output": str(step["out"]),
                      "status": "running", "started": _now(), "attempts": record.get("attempts", 0) + 1}
            self.state["steps"][name] = record
            self.save_state()
            t0 = time.monotonic()
            try:
                out = self.step_fn(stage, step["recipe"], values)
            except BaseException as err:
                record.update(status="failed", error=str(err) or type(err).__name__, finished=_now(),
                              seconds=round(time.monotonic() - t0, 1))
                self.save_state()
                self.log(f"[pipeline] step {name} failed; fix it and run the same command again: "
                         f"finished steps are skipped")
                if isinstance(err, UserError):
                    raise UserError(f"step '{name}' ({stage}): {err.problem}", err.fix) from None
                raise
            seconds = time.monotonic() - t0
            measured_units += step["units"]
            measured_seconds += seconds
            record.update(status="done", output=str(out), finished=_now(), seconds=round(seconds, 1))
            record.pop("error", None)
            self.save_state()
            self.log(f"[pipeline] step {i}/{len(plan)} {name} done in {fmt_seconds(seconds)} -> {out}")
        self.state["finished"] = _now()
        self.state["seconds_this_run"] = round(time.monotonic() - started, 1)
        self.save_state()
        return self.state


def run_pipeline(name: str, overrides: dict[str, Any] | None = None, quick: bool = False,
                 log: Callable[[str], None] | None = None, report: bool = True) -> tuple[dict[str, Any], Path | None]:
    """Run (or resume) a pipeline, then write its report. Returns pipeline.json's content and the report dir."""
    pipeline, source = load_pipeline(name, overrides)
    runner = PipelineRunner(pipeline, source, quick, log)
    state = runner.run()
    if not report:
        return state, None
    from pruneofa.pipeline.report import build_report

    return state, build_report(pipeline, runner.out)
