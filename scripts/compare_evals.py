"""Two models' `evaluate` outputs on the same crops, paired: treatment minus control per crop (t-based 95 %
interval over crops), grains found against true, and the intercept error per micrograph.

  python scripts/compare_evals.py CONTROL.json TREATMENT.json [--names control,treatment]

Crops of one micrograph are not independent, so the interval is descriptive (docs/PROTOCOL.md).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from fedtransfer_jax.metrics.stats import paired_comparison

METRICS = ("ari", "boundary_f1")


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def compare(control: dict, treatment: dict, names: tuple[str, str]) -> str:
    crops = sorted(control["per_image"])
    if sorted(treatment["per_image"]) != crops:
        raise SystemExit("compare_evals: the two files score different crops")
    lines = [f"{len(crops)} crops; {names[1]} minus {names[0]}, paired over crops (95 % t interval)"]
    for m in METRICS:
        a = [treatment["per_image"][c][m] for c in crops]
        b = [control["per_image"][c][m] for c in crops]
        p = paired_comparison(a, b)
        lines.append(
            f"  {m:12s} {np.mean(b):.3f} -> {np.mean(a):.3f}: {p['diff_mean']:+.3f} "
            f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]"
        )
    true = sum(control["per_image"][c]["n_grains_gt"] for c in crops)
    found = [sum(e["per_image"][c]["n_grains_pred"] for c in crops) for e in (control, treatment)]
    lines.append(f"  grains found for {true:.0f} true: {found[0]:.0f} -> {found[1]:.0f}")
    if "per_micrograph" in control and "per_micrograph" in treatment:
        ids = sorted(set(control["per_micrograph"]) & set(treatment["per_micrograph"]), key=lambda s: (len(s), s))
        # Micrographs where either model's intercept is undefined (no grain boundary crossed) are left out.
        defined = [
            i for i in ids
            if all(e["per_micrograph"][i].get("intercept_rel_error") is not None for e in (control, treatment))
        ]
        err = [[100 * e["per_micrograph"][i]["intercept_rel_error"] for i in defined] for e in (control, treatment)]
        left_out = sorted(set(control["per_micrograph"]) ^ set(treatment["per_micrograph"]) | set(ids) - set(defined))
        if defined:
            lines.append(
                f"  intercept error per micrograph ({' / '.join(defined)}): "
                + " -> ".join(" / ".join(f"{x:.0f}" for x in row) + f" % (mean {np.mean(row):.1f} %)" for row in err)
            )
        if left_out:
            lines.append(f"  intercept left out (undefined, or in one file only): {', '.join(left_out)}")
    if "scale" in control and "scale" in treatment:
        changed = sum(control["scale"][c]["used"] != treatment["scale"][c]["used"] for c in crops)
        lines.append(f"  scale chosen differently on {changed} of {len(crops)} crops")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("control")
    parser.add_argument("treatment")
    parser.add_argument("--names", default="control,treatment")
    args = parser.parse_args(argv)
    names = tuple(args.names.split(","))
    print(compare(load(args.control), load(args.treatment), names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
