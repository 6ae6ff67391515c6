"""Atomic checkpoints, safetensors and JSON only (no pickle anywhere).

`output_dir/checkpoints/step-N/` holds:
  model.safetensors + config.json   the model with masks folded (a transformers model directory)
  masks.safetensors                 the pruning masks (absent when nothing is pruned)
  optimizer.safetensors/.json       optimizer state keyed by parameter name, and its hyperparameters
  rng-R.safetensors                 each process's torch RNG state (dropout, MLM masking)
  state.json                        step and anything else the loop needs to continue

  masks-rankR.sha256                each process's hash of its masks when the checkpoint was taken;
                                    the commit checks they agree (the masks are identical on all ranks)

A checkpoint is written into `step-N.tmp/` and renamed into place only when complete (state.json is
written last, every file fsynced first); a crash at any moment leaves either the old set or the new
one, never a half-written `step-N/`. A checkpoint is deleted (an older one beyond `keep`, or the same
step saved again) by first renaming it to `.trash-*`, so no partly deleted directory ever looks
complete. Leftover `*.tmp` / `.trash-*` from a crash are ignored and removed by `clean_partial`.
`latest` names the newest complete checkpoint and is itself replaced atomically; resuming uses the
highest-numbered complete `step-N/`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pruneofa.errors import UserError
from pruneofa.fileio import atomic_write_text, fsync_dir
from pruneofa.sparsity import masks as M

STEP_DIR = re.compile(r"^step-(\d+)$")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises SafetensorError, OSError, ...
        detail = (str(err).splitlines() or [type(err).__name__])[0]
        fix = (f"delete {path.parent} to resume from the checkpoint before it, or re-run with overwrite=true"
               if STEP_DIR.match(path.parent.name) else "re-create the file (re-run the stage that wrote it)")
        raise UserError(f"corrupted or truncated safetensors file '{path}' ({detail})", fix) from None


# --- optimizer state by parameter name ---------------------------------------------------------
def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """Split an optimizer's state into named tensors and JSON-able hyperparameters."""
    tensors, groups = {}, []
    for group in optimizer.param_groups:
        groups.append({k: v for k, v in group.items() if k != "params"} | {"params": [names[id(p)] for p in group["params"]]})
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"{names[id(p)]}::{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": groups}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict, meta: dict) -> None:
    by_name = {name: p for p in (q for g in optimizer.param_groups for q in g["params"]) if (name := names[id(p)])}
    for group, saved in zip(optimizer.param_groups, meta["param_groups"], strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})
    optimizer.state.clear()
    for key, value in tensors.items():
        name, field = key.split("::", 1)
        if name not in by_name:
            raise UserError(f"checkpoint optimizer state names unknown parameter '{name}'",
                            "resume with the model and recipe the checkpoint was made with")
        param = by_name[name]
        optimizer.state.setdefault(param, {})[field] = value.to(param.device) if field != "step" else value


# --- whole checkpoints -------------------------------------------------------------------------
def checkpoint_root(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m[1]), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))
             and (p / "state.json").is_file()]
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def _discard(path: Path) -> None:
    """Remove a checkpoint directory so that no crash leaves it half-deleted under its own name."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_partial(output_dir: Path) -> list[Path]:
    """Remove what a crash can leave in the checkpoint folder: `step-N.tmp/`, `.trash-*`, temp files."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    removed = []
    for p in root.iterdir():
        if p.name.endswith(".tmp") or p.name.startswith(".trash-") or ".tmp-" in p.name:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def begin_checkpoint(output_dir: Path, step: int) -> Path:
    """A fresh temporary directory to write checkpoint `step` into (removing a crashed attempt)."""
    tmp = checkpoint_root(output_dir) / f"step-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_checkpoint(tmp: Path, state: dict[str, Any], keep: int) -> Path:
    """Seal `tmp` (state.json last), rename it into place, update `latest`, drop old checkpoints."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    atomic_write_text(tmp / "state.json", json.dumps(state, indent=1))
    fsync_dir(tmp)
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    if final.exists():  # the same step saved twice (e.g. a resume at the last step): the new one wins
        _discard(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    atomic_write_text(final.parent / "latest", final.name + "\n")
    for _, old in complete_checkpoints(final.parent.parent)[:-keep]:
        _discard(old)
    return final


def read_json(path: Path) -> Any:
    """A checkpoint's JSON file, or a UserError naming it when it is missing or damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"unreadable checkpoint file '{path}' ({type(err).__name__}: {err})",
                        f"delete {path.parent} to resume from the checkpoint before it, or re-run with overwrite=true"
                        ) from None


def read_state(checkpoint: Path) -> dict[str, Any]:
    state = read_json(checkpoint / "state.json")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise UserError(f"checkpoint state '{checkpoint}/state.json' has no step",
                        f"delete {checkpoint} to resume from the checkpoint before it")
    return state


def mask_digest(masks: dict[str, torch.Tensor]) -> str:
    """sha256 over the layer names, shapes and bits of a set of masks (equal masks, equal digest)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(masks):
        m = masks[name].detach().to("cpu", torch.bool).contiguous()
        h.update(f"{name}:{tuple(m.shape)};".encode())
        h.update(m.numpy().tobytes())
    return h.hexdigest()


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], sharded: bool = False) -> None:
    """Load a plain (folded) state dict into a model that may carry masks (and be sharded)."""
    remapped = dict(state)
    for name in M.masked_modules(model):
        if f"{name}.weight" in remapped:
            remapped[f"{name}{M.MASKED_WEIGHT}"] = remapped.pop(f"{name}.weight")
    current = model.state_dict()
    if sharded:
        from pruneofa.train import sharding

        sharding.load_full_state(model, remapped, strict=False)
        missing, unexpected = [k for k in current if k not in remapped], [k for k in remapped if k not in current]
    else:
        missing, unexpected = model.load_state_dict(remapped, strict=False)
    # masks come from masks.safetensors; tied weights (LM decoder = embeddings) are saved once
    loaded_ptrs = {_storage(current[k]) for k in remapped if k in current}
    missing = [k for k in missing if not k.endswith(".mask") and _storage(current[k]) not in loaded_ptrs]
    if missing or unexpected:
        raise UserError(f"checkpoint does not match the model ({len(missing)} missing, {len(unexpected)} unexpected "
                        f"tensors, e.g. {(missing + unexpected)[0]})", "resume with the recipe the checkpoint was made with")


def _storage(tensor: torch.Tensor) -> int:
    """Where a tensor's data lives (a sharded DTensor: its local shard's), to recognise tied weights."""
    return getattr(tensor, "to_local", lambda: tensor)().data_ptr()


def check_mask_digests(folder: Path) -> None:
    digests = {f.name: f.read_text().strip() for f in sorted(folder.glob("masks-rank*.sha256"))}
    if len(set(digests.values())) > 1:
        raise RuntimeError(f"pruning masks differ between processes ({digests}); this is a bug, please report it")
