"""`pruneofa eval MODEL retrieval`: prints and writes the recalls beside the model; bad input is one
line on stderr, exit code 2, and no metrics file."""

import json
import shutil

import pytest

from pruneofa.cli import main
from pruneofa.stages.registry import load_recipe
from pruneofa.tasks.retrieval import RetrievalConfig, evaluate_retrieval
from tests.conftest import SEQ
from tests.tasks.summaries import make_articles, write_summaries


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_summaries(tmp_path_factory.mktemp("eval-retrieval") / "summaries.json", make_articles(80, seed=2))


def small(corpus, **extra):
    values = {"retrieval.files": f"[{corpus}]", "retrieval.validation_fraction": 0.25, "retrieval.max_seq_len": SEQ,
              "retrieval.batch_size": 8, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def test_the_shipped_recipe_is_a_retrieval_eval():
    recipe = load_recipe("eval", "retrieval")
    assert recipe.kind == "retrieval" and recipe.retrieval.files == ["offline/wiki-summaries"]
    assert recipe.retrieval.split_seed == 0 and recipe.retrieval.validation_fraction == 0.05


def test_cli_prints_the_recalls_and_writes_them_beside_the_model(tiny_models, corpus, tmp_path, capsys):
    model = shutil.copytree(tiny_models["bert"], tmp_path / "model")
    capsys.readouterr()
    assert main(["eval", str(model), "retrieval", *small(corpus)]) == 0
    out = capsys.readouterr()
    printed, written = json.loads(out.out), json.loads((model / "eval_retrieval.json").read_text())
    assert printed == written and f"wrote {model / 'eval_retrieval.json'}" in out.err
    expected = evaluate_retrieval(str(model), RetrievalConfig(files=[str(corpus)], validation_fraction=0.25,
                                                              max_seq_len=SEQ, batch_size=3))
    assert written["n_queries"] == expected["n_queries"] == 20
    for key in ("recall@1", "recall@10"):  # another batch size pads differently: the same figures
        assert written[key] == pytest.approx(expected[key])
    assert not list(model.glob(".eval_retrieval.json.tmp-*"))  # written atomically: no temporary file is left


def test_an_asset_is_scored_into_the_output_file(corpus, tmp_path, capsys):
    target = tmp_path / "deep" / "minilm.json"
    args = small(corpus, **{"retrieval.max_queries": 6})
    assert main(["eval", "offline/minilm-l6", "retrieval", *args, "--output", str(target)]) == 0
    metrics = json.loads(target.read_text())
    assert metrics["n_queries"] == 6 and metrics["pooling"] == "mean" and metrics["normalize"] is True


def expect_refusal(capsys, args, needle, unwritten):
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not unwritten.exists()


@pytest.mark.parametrize("extra, needle", [
    (["engine=ort"], "engine=ort applies to task metrics"),
    (["batch_size=8"], "batch_size applies to task metrics"),
    (["data.task=rotten_tomatoes"], "data applies to task metrics"),
    (["retrieval.max_seq_len=512"], "exceeds the model's 64 positions"),
    (["retrieval.files=[nowhere.json]"], "'nowhere.json' not found"),
    (["retrieval.validation_fraction=0"], "retrieval.validation_fraction"),
    (["retrieval.topk=3"], "unknown recipe key 'retrieval.topk'"),
])
def test_bad_retrieval_input_is_one_line_and_writes_nothing(tiny_models, corpus, tmp_path, capsys, extra, needle):
    model = shutil.copytree(tiny_models["bert"], tmp_path / "model")
    expect_refusal(capsys, ["eval", str(model), "retrieval", *small(corpus), *extra], needle,
                   model / "eval_retrieval.json")


def test_bad_models_are_refused_in_one_line(tiny_models, corpus, tmp_path, capsys):
    qat = shutil.copytree(tiny_models["bert"], tmp_path / "qat")
    (qat / "qat_state.safetensors").write_bytes(b"")
    expect_refusal(capsys, ["eval", str(qat), "retrieval", *small(corpus)], "is a QAT dir", qat / "eval_retrieval.json")
    expect_refusal(capsys, ["eval", str(tmp_path / "no" / "model"), "retrieval", *small(corpus)], "does not exist",
                   tmp_path / "no")
    expect_refusal(capsys, ["eval", str(corpus.parent), "retrieval", *small(corpus)], "not a transformers model",
                   corpus.parent / "eval_retrieval.json")
    # an installed asset is no place for results
    expect_refusal(capsys, ["eval", "offline/minilm-l6", "retrieval", *small(corpus)], "--output FILE",
                   tmp_path / "never")
    expect_refusal(capsys, ["eval", str(tiny_models["bert"]), "data.task=rotten_tomatoes", "retrieval.max_queries=3"],
                   "retrieval.* applies to kind=retrieval", tmp_path / "never")  # the task recipe, retrieval settings
