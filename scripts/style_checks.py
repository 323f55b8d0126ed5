r"""Style-transfer checks of the style techniques on the embedded synthetic labs (thin CLI over
fedtransfer_jax.style.report / style.checks).

  python scripts/style_checks.py --seed 100 --out /tmp/style_report/100 [--methods adain,fourier,gen]

Design decisions are made on the development seeds 100, 101, 102 only (docs/PROTOCOL.md). Per method:
fidelity ratio per target lab (< 1: restyled tiles closer to the target lab than any other real lab is;
texture and global descriptor groups, headline = the larger), boundary polarity agreement, a domain
classifier's target fraction, structure (reference segmenter's F1 / ARI on restyled vs original tiles),
timings. Writes ``<out>/style_checks.json`` and ``<out>/style_grid_<method>.png``; see docs/STYLE.md.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app, flags

from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.style import report as report_lib
from fedtransfer_jax.style.techniques import config_defaults

_SEED = flags.DEFINE_integer("seed", 100, "Data and check seed (use the development seeds 100, 101, 102).")
_OUT = flags.DEFINE_string("out", None, "Output folder (style_checks.json + style grids).")
_METHODS = flags.DEFINE_list(
    "methods", ["adain", "fourier", "gen"], "Style techniques (style.techniques registry)."
)
_LABS = flags.DEFINE_list(
    "labs", ["brightfield", "darkfield", "sem", "lowcontrast"], "Client labs (targets)."
)
_OTHER = flags.DEFINE_list("other_labs", ["tint"], "Held-out-only labs (count as 'other labs' in the ratio).")
_SIZE = flags.DEFINE_integer("size", 64, "Tile size (px).")
_N_TRAIN = flags.DEFINE_integer("n_train", 8, "Labelled training tiles per client (protocol: 8).")
_N_HELDOUT = flags.DEFINE_integer("n_heldout", 96, "Held-out tiles per lab (half reference, half query).")
_PER_PAIR = flags.DEFINE_integer("per_pair", 16, "Tiles restyled per (source, target) pair.")
_CLF = flags.DEFINE_integer("classifier_steps", 400, "Domain classifier steps (0: skip).")
_SEG = flags.DEFINE_integer(
    "segmenter_steps", 600, "Reference segmenter steps (0: skip the structure check)."
)
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Federated rounds of a shared style model (style.rounds).")
_LOCAL = flags.DEFINE_integer("local_steps", 8, "Local steps per round (style.local_steps).")
_LR = flags.DEFINE_float("lr", 2e-3, "Client Adam learning rate of the shared style model (style.lr).")
_K = flags.DEFINE_integer("styles_per_client", 8, "Styles each client shares (style.styles_per_client).")
_CFG = flags.DEFINE_list(
    "style", [], "config.style overrides key=value (python literal), e.g. padding='zero'."
)


def parse_style_overrides(items: Sequence[str]) -> dict:
    """``['padding="zero"', 'gen_profile_px=8']`` -> dict; keys must be known style-technique config keys."""
    import ast

    known = config_defaults()
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise app.UsageError(f"--style {item!r}: expected key=value with key in {sorted(known)}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # bare strings: padding=zero
    return out


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _OUT.value:
        raise app.UsageError("--out is required")
    cfg = parse_style_overrides(_CFG.value)
    train, heldout = report_lib.synthetic_labs(
        list(_LABS.value) + list(_OTHER.value),
        n_train=_N_TRAIN.value,
        n_heldout=_N_HELDOUT.value,
        size=_SIZE.value,
        seed=_SEED.value,
    )
    report = report_lib.check_methods(
        _METHODS.value,
        cfg,
        {k: train[k] for k in _LABS.value},
        heldout,
        _LABS.value,
        seed=_SEED.value,
        rounds=_ROUNDS.value,
        local_steps=_LOCAL.value,
        lr=_LR.value,
        styles_per_client=_K.value,
        per_pair=_PER_PAIR.value,
        classifier_steps=_CLF.value,
        segmenter_steps=_SEG.value,
        out_dir=_OUT.value,
    )
    report["style_config"] = cfg
    path = os.path.join(_OUT.value, "style_checks.json")
    io_utils.write_json_atomic(path, report)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
