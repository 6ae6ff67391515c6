"""Recipe files: a shipped name or YAML path, then overrides, then a schema's validation.

    pruneofa prune bert-base-90 train.max_steps=200 pruning.target_sparsity=0.85 data.train_files=[a.txt,b.txt]

On the command line, values are parsed as YAML scalars/lists (`true`, `0.9`, `[a,b]`) by
`parse_overrides`; keys are dotted paths. The pipeline passes its (already typed) values as a dict.
YAML is read with `safe_load`, so a recipe is data and can never run code. Which schema a stage
validates with is the stage registry's business (`pruneofa.stages.registry.load_recipe`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pruneofa.errors import UserError

DEFAULT_RECIPE = "offline"


def recipes_dir() -> Path:
    return Path(str(resources.files("pruneofa") / "recipes"))


def shipped_recipes() -> dict[str, Path]:
    """`stage/name` -> path of every YAML recipe shipped with the package."""
    return {f"{p.parent.name}/{p.stem}": p for p in sorted(recipes_dir().glob("*/*.yaml"))}


def find_recipe(folder: str, recipe: str | None) -> Path:
    """A YAML path as given, or the shipped recipe `folder/NAME` (default NAME: offline)."""
    name = recipe or DEFAULT_RECIPE
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"recipe file '{name}' not found", "pass an existing YAML path or a shipped recipe name")
        return path
    shipped = shipped_recipes()
    for key in (f"{folder}/{name}", name):
        if key in shipped:
            return shipped[key]
    names = sorted(k.split("/", 1)[1] for k in shipped if k.startswith(f"{folder}/"))
    raise UserError(f"no recipe '{name}' for stage {folder}", f"use a YAML path or one of: {', '.join(names)}")


def parse_override(text: str) -> tuple[str, Any]:
    """'train.max_steps=100' -> ('train.max_steps', 100): the value parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"bad override '{text}'", "write overrides as dotted.key=value, e.g. train.max_steps=100")
    return key, parse_value(raw)


def parse_value(raw: str) -> Any:
    """An override's text as YAML: 'true' -> True, '0.9' -> 0.9, '[a,b]' -> ['a', 'b'], '' -> ''."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def text_values_parsed(overrides: dict[str, Any]) -> dict[str, Any]:
    """A pipeline step's overrides as the command line would give them: text values parsed as YAML
    (`"[a.txt]"` is a list there too), the others as they are."""
    return {k: parse_value(v) if isinstance(v, str) else v for k, v in overrides.items()}


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """Command-line `key=value` strings -> {dotted key: value}, in order (a later key wins)."""
    return dict(parse_override(text) for text in texts)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted key of `overrides` in the nested `data` (in place); returns `data`."""
    for key, value in overrides.items():
        path = key.split(".")
        if not key or any(not part for part in path):
            raise UserError(f"bad override '{key}'", "write overrides as dotted.key=value, e.g. train.max_steps=100")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override '{key}={value}': '{part}' is not a section", "check the key path")
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


def validate(schema: type[BaseModel], data: dict[str, Any]) -> Any:
    """`schema.model_validate(data)`, its first problem as a one-line UserError."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err) from None
