import pytest

from pruneofa.config.loader import apply_overrides, load_yaml, parse_overrides, shipped_recipes
from pruneofa.errors import UserError
from pruneofa.stages.registry import load_recipe, validate_recipe


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates_and_names_its_command(name):
    stage, recipe = name.split("/")
    path = shipped_recipes()[name]
    text = path.read_text()
    header = text.split("\n\n")[0]
    assert "/work/" not in text and "/home/" not in text and "site-packages" not in text  # no machine paths
    if stage == "pipeline":  # multi-stage recipes run with `pruneofa run NAME` (the demo also as `pruneofa demo`)
        from pruneofa.pipeline.runner import load_pipeline

        assert text.startswith("#") and ("pruneofa run" in header or "pruneofa demo" in header)
        assert load_pipeline(recipe)[0].steps
        return
    assert text.startswith("#") and f"pruneofa {stage}" in header  # the header gives the command
    assert load_recipe(stage, recipe).stage == stage


def test_overrides_parse_yaml_values_and_lists():
    data = apply_overrides({"train": {}}, parse_overrides([
        "train.max_steps=7", "data.train_files=[a.txt,b.txt]", "resume=true", "pruning.target_sparsity=0.85"]))
    assert data["train"]["max_steps"] == 7 and data["data"]["train_files"] == ["a.txt", "b.txt"]
    assert data["resume"] is True and data["pruning"]["target_sparsity"] == 0.85


@pytest.mark.parametrize("override,needle", [
    ("train.nonsense=1", "unknown recipe key 'train.nonsense'"),
    ("pruning.target_sparsity=1.0", "pruning.target_sparsity"),
    ("train.max_steps=many", "train.max_steps"),
    ("pruning.stop_step=10", "stop_step"),
    ("pruning.pattern=nm:3:2", "nm:3:2"),
    ("pruning.pattern=block:0x4", "block:0x4"),
    ("train.max_steps=200", "after train.max_steps"),
    ("trainmax_steps", "bad override"),
])
def test_bad_values_give_one_line_errors(override, needle):
    with pytest.raises(UserError) as err:
        load_recipe("prune", None, parse_overrides([override]))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_recipe_for_another_stage_is_refused():
    with pytest.raises(UserError, match="stage 'prune'"):
        validate_recipe("teacher", load_yaml(shipped_recipes()["prune/offline"]))


def test_unknown_recipe_name_lists_the_shipped_ones():
    with pytest.raises(UserError, match="offline"):
        load_recipe("prune", "no-such-recipe")
