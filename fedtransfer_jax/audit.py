"""Privacy audit: what an honest-but-curious server can reconstruct from what the clients send it.

Command line of `fedtransfer_jax.privacy.audit` (the attacks, their scores and the report live there):

    python -m fedtransfer_jax.audit --workdir W [flags]

reads the workdir written by `launch.py` (config.json), runs every attack on its clients and writes
`W/audit.json` and `W/audit.md` atomically (and prints the markdown).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fedtransfer_jax.privacy.audit import AuditSettings, report_markdown, run_workdir_audit, write_report

_DEFAULTS = AuditSettings._field_defaults


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x)


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fedtransfer_jax.audit", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a workdir written by launch.py (reads config.json)")
    p.add_argument(
        "--clients",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=_DEFAULTS["clients"],
        help="comma-separated client names to audit (default: all training clients)",
    )
    p.add_argument(
        "--victims",
        type=int,
        default=_DEFAULTS["victims"],
        help="shared images attacked per client (style inversion)",
    )
    p.add_argument(
        "--max_images",
        type=int,
        default=_DEFAULTS["max_images"],
        help="client images regenerated (victims + baselines)",
    )
    p.add_argument("--style_steps", type=int, default=_DEFAULTS["style_steps"])
    p.add_argument("--gi_steps", type=int, default=_DEFAULTS["gi_steps"])
    p.add_argument("--gi_size", type=int, default=_DEFAULTS["gi_size"])
    p.add_argument(
        "--gi_clients",
        type=int,
        default=_DEFAULTS["gi_clients"],
        help="clients attacked by gradient inversion",
    )
    p.add_argument("--gi_batch_sizes", type=_ints, default=_DEFAULTS["gi_batch_sizes"])
    p.add_argument(
        "--gi_features",
        type=_ints,
        default=_DEFAULTS["gi_features"],
        help="U-Net widths of the attacked model",
    )
    p.add_argument("--gi_client_lr", type=float, default=_DEFAULTS["gi_client_lr"])
    p.add_argument("--noise_multipliers", type=_floats, default=_DEFAULTS["noise_multipliers"])
    p.add_argument(
        "--pi_tiles",
        type=int,
        default=_DEFAULTS["pi_tiles"],
        help="tiles per lab for property inference (regenerated beyond the clients' own; 0: skip it)",
    )
    p.add_argument(
        "--pi_permutations",
        type=int,
        default=_DEFAULTS["pi_permutations"],
        help="property inference: permutation-test shuffles",
    )
    p.add_argument(
        "--pi_alpha",
        type=float,
        default=_DEFAULTS["pi_alpha"],
        help="property inference: ridge penalty in units of the number of (standardised) features",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = AuditSettings(**{k: v for k, v in vars(args).items() if k != "workdir"})
    report = run_workdir_audit(args.workdir, settings)
    write_report(args.workdir, report)
    print(report_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
