"""Recipes: YAML files checked by typed schemas, with `key=value` overrides."""

from pruneofa.config.loader import load_recipe

__all__ = ["load_recipe"]
