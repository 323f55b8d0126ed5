r"""Personalising the shipped model: a lab that was one of its clients fine-tunes it alone on its own labels.

  python -m experiments.personalise --workdir runs/personalise          # 3 training seeds, scored (~25 min)
  python launch.py --config experiments/personalise.py --workdir W --config.seed=1  # one run
  python launch.py --config experiments/personalise.py:tiny --workdir /tmp/p        # tests

The real TBM tint-etched lab (../shared/data/tbm_tint_etched) was one of the shipped model's ten clients,
trained on its 13 training micrographs. Here it takes the shipped model (`init_from = 'shipped'`) and
fine-tunes it alone on the same 13 micrographs with experiments/few_labels.py's `local,cpu` recipe: 5 rounds
of 10 local Adam steps of 8 tiles, the same augmentation, intensity stretch and cosine schedule,
post-processing chosen on its 3 validation micrographs (9 crops). No new data: only the lab's weight changes
(its tiles were ~15 % of the federation's). The few-label curve cannot say this: it starts from a model that
never saw the lab (few_labels.py's docstring).

The driver trains training seeds 0, 1, 2 (`config.seed`; the data seed stays 0, so every run holds out the
same test micrographs), scores each model and the shipped model on the lab's 21 test crops with `evaluate` at
`--scale 1` (primary) and `auto`, and writes W/summary.{json,md}: per model the means with t-based 95 % CIs
over crops, each seed's model and the seeds' per-crop mean paired with the shipped model (docs/PROTOCOL.md,
"Personalising the shipped model").

Cost (2-core CPU): ~2.5 min of training and ~4 min of scoring per seed, the shipped model's scoring ~4 min:
~25 min in all. Each run resumes in W/seed<s>; scores already written are kept.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location("_few_labels_config", Path(__file__).with_name("few_labels.py"))
few_labels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(few_labels)

SEEDS = (0, 1, 2)
SCALES = few_labels.SCALES
SHIPPED = "shipped"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`:` (the run) or `:tiny` (tests: the tiny recipe, no shipped model)."""
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"experiments/personalise.py: variant is '' or 'tiny', got {arg!r}")
    tiny = variant == "tiny"
    config = few_labels.get_config("1,local,tiny" if tiny else "1,local,cpu")
    config.name = "personalise" + ("-tiny" if tiny else "")
    config.data.train_groups = 0  # every training micrograph: the ones the shipped model trained on
    config.init_from = "" if tiny else "shipped"
    return config


def model_name(seed: int) -> str:
    return f"seed{seed}"


def aggregate(scores: dict[str, dict[str, dict]]) -> dict:
    """`scores[model][scale]` (few_labels.model_scores; models 'shipped' and 'seed<s>') -> per model and
    scale the means with CIs, and per scale each seed's model and the seeds' per-crop mean minus the shipped
    model, paired over crops (ARI, boundary F1, ARI before clean-up)."""
    from fedtransfer_jax.metrics import stats  # noqa: PLC0415

    out = few_labels.aggregate(scores)
    out["comparisons"] = {}
    seeds = [m for m in scores if m != SHIPPED]
    for scale in SCALES[::-1]:  # scale 1, the primary, first
        if scale not in scores.get(SHIPPED, {}):
            continue
        have = [m for m in seeds if scale in scores[m]]
        for metric in ("ari", "boundary_f1", "ari_raw"):
            base = scores[SHIPPED][scale][metric]
            names = sorted(base)
            for m in have:
                if set(scores[m][scale][metric]) != set(base):
                    raise ValueError(f"{m} and the shipped model were scored on different crops")
                vals = [scores[m][scale][metric][n] for n in names]
                out["comparisons"].setdefault(f"{m} vs shipped @ {scale}", {})[metric] = stats.paired_comparison(
                    vals, [base[n] for n in names]
                )
            if have:
                mean = [sum(scores[m][scale][metric][n] for m in have) / len(have) for n in names]
                out["comparisons"].setdefault(f"mean of {len(have)} seeds vs shipped @ {scale}", {})[metric] = (
                    stats.paired_comparison(mean, [base[n] for n in names])
                )
    primary = {k: v["ari"] for k, v in out["comparisons"].items() if k.endswith("@ 1")}
    per_seed = [c["diff_mean"] for k, c in primary.items() if k.startswith("seed")]
    mean = next((c for k, c in primary.items() if k.startswith("mean")), None)
    out["gain"] = {  # docs/PROTOCOL.md's rule, on the primary endpoint (ARI at scale 1)
        "seeds": len(per_seed),
        "seeds_positive": sum(d > 0 for d in per_seed),
        "shown": bool(mean is not None and len(per_seed) == len(SEEDS) and mean["ci_low"] > 0 and all(d > 0 for d in per_seed)),
    }
    return out


def markdown(study: dict) -> str:
    text = few_labels.markdown(study).replace(
        "# The few-label curve: the TBM lab with k labelled micrographs (docs/PROTOCOL.md)",
        "# Personalising the shipped model on the TBM lab's own labels (docs/PROTOCOL.md)",
    ).replace("One training seed; intervals", "Training seeds as named; intervals")
    g = study["gain"]
    text += (
        f"\nThe protocol's rule (ARI at scale 1: the seeds' mean difference has an interval above 0 and every "
        f"seed's is positive): {'met' if g['shown'] else 'not met'} ({g['seeds_positive']} of {g['seeds']} seeds "
        f"positive{'' if g['seeds'] == len(SEEDS) else f'; {len(SEEDS)} needed'}).\n"
    )
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from experiments import study_driver  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="Personalising the shipped model (docs/PROTOCOL.md).")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--data_dir", default=few_labels._pretrained.DEFAULT_DIR, help="the TBM lab's folder")
    parser.add_argument("--seeds", default="", help="comma-separated training seeds (default: 0,1,2)")
    parser.add_argument("--cpu_devices", default="auto")
    parser.add_argument("--tfds_dir", default="")
    args = parser.parse_args(argv)
    seeds = study_driver.pick(args.seeds, SEEDS, "--seeds", "seed")
    if seeds is None:
        return 2
    if not os.path.isdir(args.data_dir):
        print(f"--data_dir: {args.data_dir} is not a folder", file=sys.stderr)
        return 2
    work = os.path.abspath(args.workdir)
    tests = few_labels.test_folder(args.data_dir, os.path.join(work, "test_crops"))
    os.makedirs(os.path.join(work, "eval"), exist_ok=True)

    def scored(model: str, scale: str) -> str:
        return few_labels.scored_path(work, model, scale)

    # No --workdir: evaluate's shipped model.
    failed = [] if few_labels.score_model("personalise", work, SHIPPED, tests, [], "") else [SHIPPED]
    for seed in seeds:
        model, run_dir = model_name(seed), os.path.join(work, model_name(seed))
        if not os.path.exists(os.path.join(run_dir, "summary.json")):
            few_labels.forget_scores(work, model)
            overrides = [f"--config.seed={seed}", f"--config.data.dir={os.path.abspath(args.data_dir)}"]
            overrides += [f"--config.data.tfds_dir={args.tfds_dir}"] if args.tfds_dir else []
            if not study_driver.launch("personalise", f"seed {seed}", __file__, "", run_dir, args.cpu_devices,
                                       overrides):
                failed.append(model)
                continue
        workdir_args = ["--workdir", run_dir, "--method", "local"]
        if not few_labels.score_model("personalise", work, model, tests, workdir_args,
                                      few_labels._pretrained.REAL_CLIENT):
            failed.append(model)
    scores = {
        m: {s: few_labels.model_scores(study_driver.read_json(scored(m, s))) for s in SCALES}
        for m in [SHIPPED] + [model_name(s) for s in SEEDS]
        if all(os.path.exists(scored(m, s)) for s in SCALES)
    }
    study = aggregate(scores)
    study_driver.write_summary(work, study, markdown(study), [m for m in scores if m != SHIPPED],
                               [model_name(s) for s in SEEDS], lambda m: m)
    return 1 if failed else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
