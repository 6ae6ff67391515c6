"""Nothing in the package can run code from a file it reads: no pickle, safetensors/JSON/YAML-safe_load only."""

import re
from pathlib import Path

import pruneofa

SRC = Path(pruneofa.__file__).parent
FORBIDDEN = {
    r"\btorch\.load\s*\(": "torch.load unpickles; read tensors with safetensors",
    r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve|marshal)\b": "pickle-based (de)serialisation",
    r"\b(c?pickle|dill|joblib)\.(loads?|dumps?|Unpickler)\b": "pickle-based (de)serialisation",
    r"\byaml\.(load|unsafe_load|full_load|load_all)\s*\(": "recipes are read with yaml.safe_load",
    r"\bweights_only\s*=\s*False": "unrestricted unpickling",
    r"\ballow_pickle\s*=\s*True": "numpy pickle loading",
    r"\b(broadcast_object_list|all_gather_object|gather_object|scatter_object_list)\b": "collectives that pickle",
    r"trust_remote_code\s*=\s*True": "remote code only when the recipe passes trust_remote_code=true",
}


def test_no_unsafe_loading_anywhere_in_the_package():
    hits = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # really scanning the package
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, why in FORBIDDEN.items():
                if re.search(pattern, code):
                    hits.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}  ({why})")
    assert not hits, "\n".join(hits)


def test_trust_remote_code_is_off_unless_the_recipe_says_so():
    from pruneofa.stages.recipes import RecipeBase

    assert RecipeBase.model_fields["trust_remote_code"].default is False


def test_the_scan_catches_what_it_should(tmp_path):
    bad = ["state = torch.load(path)", "import pickle", "x = pickle.loads(b)", "yaml.load(text, Loader=None)",
           "torch.load(f, weights_only=False)", "dist.broadcast_object_list(objs)", "m(trust_remote_code=True)"]
    for line in bad:
        assert any(re.search(p, line) for p in FORBIDDEN), line
    for line in ["yaml.safe_load(text)", "model.eval()", "load_file(str(path))", "# never torch.load( here"]:
        assert not any(re.search(p, line.split("#", 1)[0]) for p in FORBIDDEN), line
