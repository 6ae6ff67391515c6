"""studies/dropout_moments.py: the encoder varies alike under packed and torch dropout masks."""

import json


def test_packed_and_torch_dropout_give_the_encoder_the_same_moments(import_study, tmp_path):
    study = import_study("dropout_moments")
    result = study.main(["--documents", "2", "--forwards", "96", "--seq-len", "16", "--json", str(tmp_path / "r.json")])
    assert result["dimensions"] == 2 * 384
    assert result["std_torch_median"] > 0  # dropout was on in both
    assert 0.9 < result["std_ratio_median"] < 1.1  # 1/sqrt(2 x 96) = 0.07 per dimension, the median much tighter
    assert 0.6 < result["mean_abs_z"] < 1.0  # sqrt(2/pi) = 0.80 when the means agree
    assert json.loads((tmp_path / "r.json").read_text()) == result
