"""BenchOptions: one typed value from CLI strings, YAML values or Python, refusing what it does not know."""

import pytest

from pruneofa.bench.options import BenchOptions
from pruneofa.errors import UserError
from pruneofa.pipeline.commands import COMMANDS, check_options


def test_cli_strings_and_yaml_values_parse_to_the_same_options():
    from_cli = BenchOptions.parse(batch_sizes="1, 8", engines="sparse,ort", seq_len=64, threads=None)
    from_yaml = BenchOptions.parse(batch_sizes=[1, 8], engines=["sparse", "ort"], seq_len=64)
    assert from_cli == from_yaml == BenchOptions(batch_sizes=(1, 8), engines=("sparse", "ort"), seq_len=64)
    assert from_cli.threads is None and from_cli.rounds == BenchOptions().rounds  # None: the default
    assert BenchOptions.parse(batch_sizes=4).batch_sizes == (4,)


@pytest.mark.parametrize("values, message", [({"batch_sizes": "1,x"}, "bad --batch-sizes"),
                                             ({"batch_sizes": "0"}, "bad --batch-sizes"),
                                             ({"round": 3}, "unknown bench option")])
def test_bad_values_are_refused_with_the_fix(values, message):
    with pytest.raises(UserError, match=message) as err:
        BenchOptions.parse(**values)
    assert err.value.fix


def test_a_bench_step_takes_exactly_the_options_and_its_own_keys():
    options = COMMANDS["bench"].options()
    assert set(BenchOptions.names()) <= set(options) and {"model", "as_json"} <= set(options)
    assert "options" not in options and "model_dir" not in options
    check_options("bench", ["model", "engines", "rounds"])
    with pytest.raises(ValueError, match="unknown bench option"):
        check_options("bench", ["model", "round"])
