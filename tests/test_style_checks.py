"""style.report and the scripts/style_checks.py CLI end to end on tiny embedded labs (16 px); the checks'
modules have their own tests (test_style_checks_{fidelity,judges,scoring}.py)."""

from __future__ import annotations

import importlib.util
import json
import os

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_end_to_end(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "style_checks_cli", os.path.join(REPO, "scripts", "style_checks.py")
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = str(tmp_path / "report")
    argv = [
        "style_checks",
        f"--out={out}",
        "--seed=100",
        "--methods=fourier,gen",
        "--labs=brightfield,darkfield",
        "--other_labs=",
        "--size=16",
        "--n_train=3",
        "--n_heldout=8",
        "--per_pair=2",
        "--classifier_steps=5",
        "--segmenter_steps=0",
        "--styles_per_client=2",
        "--style=gen_profile_px=3",
    ]
    flags.FLAGS(argv)
    try:
        cli.main(argv[:1])
    finally:
        flags.FLAGS.unparse_flags()
    with open(os.path.join(out, "style_checks.json")) as f:
        rep = json.load(f)
    assert set(rep["methods"]) == {"none", "fourier", "gen"}
    for name, m in rep["methods"].items():
        assert set(m["fidelity"]) == {"brightfield", "darkfield"}
        assert "classifier" in m and "structure" not in m  # segmenter skipped: see the stub test
        assert os.path.exists(os.path.join(out, f"style_grid_{name}.png"))
    assert rep["methods"]["gen"]["floats_per_style"] > 0 and rep["style_config"] == {"gen_profile_px": 3}
    assert "wrote" in capsys.readouterr().out
