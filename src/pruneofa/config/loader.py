"""Load a recipe: shipped name or YAML path, then `key=value` overrides, then the stage's schema.

    pruneofa prune bert-base-90 train.max_steps=200 pruning.target_sparsity=0.85 data.train_files=[a.txt,b.txt]

Values are parsed as YAML scalars/lists (`true`, `0.9`, `[a,b]`); keys are dotted paths. YAML is
read with `safe_load`, so a recipe is data and can never run code.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pruneofa.config.schema import STAGE_SCHEMAS, RecipeBase
from pruneofa.errors import UserError

DEFAULT_RECIPE = "offline"


def recipes_dir() -> Path:
    return Path(str(resources.files("pruneofa") / "recipes"))


def shipped_recipes() -> dict[str, Path]:
    """`stage/name` -> path of every YAML recipe shipped with the package."""
    return {f"{p.parent.name}/{p.stem}": p for p in sorted(recipes_dir().glob("*/*.yaml"))}


def find_recipe(stage: str, recipe: str | None) -> Path:
    name = recipe or DEFAULT_RECIPE
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"recipe file '{name}' not found", "pass an existing YAML path or a shipped recipe name")
        return path
    shipped = shipped_recipes()
    for key in (f"{stage}/{name}", name):
        if key in shipped:
            return shipped[key]
    names = sorted(k.split("/", 1)[1] for k in shipped if k.startswith(f"{stage}/"))
    raise UserError(f"no recipe '{name}' for stage {stage}", f"use a YAML path or one of: {', '.join(names)}")


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"bad override '{text}'", "write overrides as dotted.key=value, e.g. train.max_steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override '{text}': '{part}' is not a section", "check the key path")
            node = child
        node[path[-1]] = value
    return data


def format_validation_error(err: ValidationError) -> UserError:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "recipe"
    if first["type"] == "extra_forbidden":
        return UserError(f"unknown recipe key '{where}'", "remove it or check its spelling (see the shipped recipes)")
    if first["type"] == "missing":
        return UserError(f"recipe key '{where}' is required", f"set it in the recipe or pass {where}=...")
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    if first["type"].startswith(("value_error", "assertion")) or isinstance(got, dict):
        return UserError(f"invalid recipe: {message}", "fix the recipe or override the value")
    return UserError(f"recipe key '{where}': {message} (got {got!r})", f"pass a valid {where}=...")


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"recipe '{path}' is not valid YAML ({str(err).splitlines()[0]})", "fix its syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe '{path}' is not a mapping of keys", "write the recipe as key: value lines")
    return data


def validate_recipe(stage: str, data: dict[str, Any]) -> RecipeBase:
    if data.setdefault("stage", stage) != stage:
        raise UserError(f"recipe is for stage '{data['stage']}', not '{stage}'", f"run: pruneofa {data['stage']} ...")
    try:
        return STAGE_SCHEMAS[stage].model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err) from None
    except UserError:
        raise


def load_recipe(stage: str, recipe: str | None = None, overrides: list[str] | None = None) -> RecipeBase:
    data = apply_overrides(load_yaml(find_recipe(stage, recipe)), list(overrides or []))
    return validate_recipe(stage, data)
