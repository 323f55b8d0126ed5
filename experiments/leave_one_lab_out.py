r"""Study (b) of docs/PROTOCOL.md v2: leave one lab out. Does sharing styles help a lab nobody trained on?

  python -m experiments.leave_one_lab_out --workdir runs/lolo                 # all nine labs, 10 seed pairs
  python -m experiments.leave_one_lab_out --workdir runs/lolo --labs tint,sem # some labs (resumes the rest later)
  python launch.py --config experiments/leave_one_lab_out.py:tint --workdir runs/lolo/tint   # one lab by hand
  python -m experiments.leave_one_lab_out --workdir runs/lolo1 --variant session            # one session: ~1 h
  python -m experiments.leave_one_lab_out --workdir /tmp/lolo --variant tiny --labs sem       # tests: ~1 min

Each of the nine synthetic labs (data/synthetic.LAB_NAMES) is once the unseen lab; the other eight are the
clients (4 per round, as in the main study). Same training as the main study (experiments/grains.py:fair:
augmentation for every method, cosine schedule, model selection on validation tiles) and its 10 seed pairs
(init i, data 1000 + i). Endpoint: the held-out lab's post-processed ARI on whole 256 px test images
(`whole_unseen`), per lab and as the macro mean over the held-out labs; the comparisons are paired over seeds
on that macro mean (fedtransfer_gen against FedAvg and both controls; t-based 95 % CIs, Holm over the family).
The runner launches one config per lab (<workdir>/<lab>/, each resumable), then writes <workdir>/summary.json
and summary.md (with --labs, summary_<labs>.json / .md: a subset is not the study).

Cost (2-core CPU, from the main study's 2 h 27 min for 8 methods x 10 seeds): five methods x ~1.8 min x 9 labs
x 10 seeds ~ 14 h; one lab ~1.5 h. On one GPU, minutes per lab. `session` (docs/PROTOCOL.md, "Study (b) in one
session"): one seed pair per lab, four methods (no centralized), the nine labs as the replicates: measured
62 min (6.9 min per held-out lab; 70-82 s per method, data and evaluation included), 2026-12-05.
`tiny`: 32 px, 2 seeds, 3 methods.

The comparisons are made two ways: paired over seeds on the macro mean over labs (the full study's), and
paired over held-out labs on each lab's mean over seeds (the session study's, where one seed leaves nothing
to pair over seeds); `primary_analysis` in summary.json says which one the study's protocol named.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_grains_config", Path(__file__).with_name("grains.py"))
_grains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grains)

METHODS = ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style", "centralized")
REFERENCES = ("fedavg", "gen_own_style", "gen_random_style")
PRIMARY = "fedtransfer_gen"
TINY_METHODS = ("fedavg", "fedtransfer_gen", "gen_random_style")
SESSION_METHODS = ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style")
VARIANTS = ("tiny", "session")


def _labs() -> tuple[str, ...]:
    from fedtransfer_jax.data import synthetic  # noqa: PLC0415

    return tuple(synthetic.LAB_NAMES)


def get_config(arg: str | None = None):
    """`:<lab>` (the full study's budget), `:<lab>,session` (one seed pair, four methods) or `:<lab>,tiny` (the
    tests'): `<lab>` is the held-out lab."""
    parts = [p for p in (arg or "").split(",") if p]
    tiny, session = "tiny" in parts, "session" in parts
    held = [p for p in parts if p not in VARIANTS]
    labs = _labs()
    if len(held) != 1 or held[0] not in labs:
        raise ValueError(
            "experiments/leave_one_lab_out.py: name the held-out lab as the variant (':<lab>', ':<lab>,session' or "
            f"':<lab>,tiny'), "
            f"got {arg!r}; labs: {', '.join(labs)}"
        )
    lab = held[0]
    config = _grains.get_config("tiny" if tiny else "fair")
    config.name = f"lolo-{lab}" + ("-tiny" if tiny else "-session" if session else "")
    config.data.clients = tuple(n for n in labs if n != lab)
    config.data.unseen_clients = (lab,)
    config.study_references = REFERENCES
    if tiny:
        config.methods = TINY_METHODS
        config.study_references = tuple(r for r in REFERENCES if r in TINY_METHODS)
        config.seeds, config.data_seeds = (0, 1), (1000, 1001)
        config.data.val_per_client = 1
        config.eval.select, config.eval.every_rounds = "best_val", 1
        config.fl.lr_schedule = "cosine"
        config.eval.whole_images, config.eval.whole_image_size = 1, 64
        config.figures = False
    elif session:
        config.methods = SESSION_METHODS
        config.seeds, config.data_seeds = (0,), (1000,)
    else:
        config.methods = METHODS
        config.seeds = tuple(range(10))
        config.data_seeds = tuple(1000 + i for i in range(10))
    return config


def lab_endpoint(study: dict) -> dict[str, list[float]]:
    """Per method, the held-out lab's whole-image post-processed ARI per seed (a lab's study summary.json)."""
    out = {}
    for m, entry in study["methods"].items():
        whole = entry.get("whole_unseen")
        if whole is None:
            raise ValueError(f"method {m}: no whole-image unseen metrics (config eval.whole_images is 0?)")
        out[m] = list(whole["ari"]["per_seed"])
    return out


def _compare(values: dict[str, list[float]], references, primary: str) -> dict:
    """`primary` against each reference, paired over the lists' positions, Holm over the family."""
    from fedtransfer_jax.metrics import stats as stats_lib  # noqa: PLC0415

    comparisons, pvalues = {}, {}
    for ref in references:
        if ref in values and primary in values and ref != primary:
            c = stats_lib.paired_comparison(values[primary], values[ref])
            comparisons[f"{primary} vs {ref}"] = c
            pvalues[f"{primary} vs {ref}"] = c["p"]
    for name, p in stats_lib.holm(pvalues).items():
        comparisons[name]["p_holm"] = p
    return comparisons


def aggregate(per_lab: dict[str, dict], references=REFERENCES, primary: str = PRIMARY) -> dict:
    """The study over held-out labs, from each lab's study summary.json (same seeds in every lab): per lab and
    method the mean ARI, per seed the macro mean over labs, and `primary` against each reference paired over
    seeds (`comparisons`) and paired over labs (`comparisons_over_labs`), each family Holm-adjusted."""
    from experiments import study_driver  # noqa: PLC0415
    from fedtransfer_jax.metrics import stats as stats_lib  # noqa: PLC0415

    seeds = {lab: tuple(s["seeds"]) for lab, s in per_lab.items()}
    if len(set(seeds.values())) != 1:
        raise ValueError(f"labs ran different seeds: {seeds}")
    endpoint = {lab: lab_endpoint(s) for lab, s in per_lab.items()}
    methods = [m for m in next(iter(endpoint.values())) if all(m in e for e in endpoint.values())]
    n_seeds = len(next(iter(seeds.values())))
    macro = {m: [sum(endpoint[lab][m][i] for lab in endpoint) / len(endpoint) for i in range(n_seeds)] for m in methods}
    mean = lambda v: sum(v) / len(v)
    labs = sorted(endpoint)
    lab_means = {m: [mean(endpoint[lab][m]) for lab in labs] for m in methods}
    # The endpoint's floor per held-out lab (the untrained model through the same path), where recorded.
    floor = {
        lab: s["whole_untrained"]["whole_unseen"]["ari"]["mean"]
        for lab, s in per_lab.items()
        if "whole_unseen" in (s.get("whole_untrained") or {})
    }
    analysis = "seeds" if n_seeds > 1 else "labs"
    comparisons = _compare(macro, references, primary)
    over_labs = _compare(lab_means, references, primary)
    return {
        "seeds": list(next(iter(seeds.values()))),
        "labs": sorted(endpoint),
        "endpoint": "held-out lab's post-processed ARI on whole test images",
        "per_lab": {lab: {m: mean(endpoint[lab][m]) for m in methods} for lab in sorted(endpoint)},
        "macro_per_seed": macro,
        "macro_mean": {m: mean(v) for m, v in macro.items()},
        "macro_mean_ci": {m: stats_lib.mean_ci(v) for m, v in lab_means.items()},
        "untrained_floor_per_lab": floor,
        "primary_analysis": analysis,
        "comparisons": comparisons,
        "comparisons_over_labs": over_labs,
        "verdict": study_driver.verdict(comparisons if analysis == "seeds" else over_labs, references, primary),
    }


def markdown(study: dict) -> str:
    from experiments.study_driver import comparison_cells, num, verdict_words  # noqa: PLC0415

    methods = list(study["macro_mean"])
    # The endpoint's floor (the untrained model through the same path), a last column where recorded.
    floor = study.get("untrained_floor_per_lab") or {}
    floor_cell = (lambda lab: " " + num(floor.get(lab, float("nan")), ".3f") + " |") if floor else (lambda lab: "")
    lines = [
        "# Leave one lab out (docs/PROTOCOL.md v2, study b)",
        "",
        f"Endpoint: {study['endpoint']}; seeds {study['seeds']}; held-out labs {', '.join(study['labs'])}.",
        "",
        "| held-out lab | " + " | ".join(methods) + " |" + (" *untrained (floor)* |" if floor else ""),
        "|---" * (len(methods) + 1 + bool(floor)) + "|",
    ]
    for lab, row in study["per_lab"].items():
        lines.append(f"| {lab} | " + " | ".join(f"{row[m]:.3f}" for m in methods) + " |" + floor_cell(lab))
    floor_mean = sum(floor.values()) / len(floor) if floor and len(floor) == len(study["per_lab"]) else float("nan")
    lines.append(
        "| **macro mean** | " + " | ".join(f"**{study['macro_mean'][m]:.3f}**" for m in methods) + " |"
        + (f" {num(floor_mean, '.3f')} |" if floor else "")
    )
    ci = study.get("macro_mean_ci")
    if ci:
        lines.append(
            "| 95 % CI over labs | "
            + " | ".join(f"[{num(ci[m]['ci_low'], '.3f')}, {num(ci[m]['ci_high'], '.3f')}]" for m in methods)
            + " |" + (" |" if floor else "")
        )
    protocol_key = {"seeds": "comparisons", "labs": "comparisons_over_labs"}[study.get("primary_analysis", "seeds")]
    for key, over in (("comparisons", "seeds, on the macro mean over labs"), ("comparisons_over_labs", "held-out labs")):
        if key not in study:
            continue
        tag = " (the protocol's analysis)" if key == protocol_key else ""
        lines += ["", f"| comparison, paired over {over}{tag} | n | diff | 95 % CI | p | p (Holm) |", "|---|---|---|---|---|---|"]
        for name, c in study[key].items():
            lines.append(f"| {name} | {c['n']} | {comparison_cells(c)} |")
    v = study.get("verdict")
    if v:
        lines += ["", f"**Verdict (the protocol's rule): {verdict_words(v)}**: {v['why']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--labs", default="", help="comma-separated held-out labs (default: all)")
    parser.add_argument("--variant", default="", choices=("",) + VARIANTS)
    parser.add_argument("--cpu_devices", default="auto")
    args = parser.parse_args(argv)
    from experiments import study_driver  # noqa: PLC0415

    labs = study_driver.pick(args.labs, _labs(), "--labs", "lab")
    if labs is None:
        return 2

    args.workdir = os.path.abspath(args.workdir)  # the launches run from the repo root
    per_lab = {}
    for lab in labs:
        workdir = os.path.join(args.workdir, lab)
        variant = lab + (f",{args.variant}" if args.variant else "")
        if not study_driver.launch("leave_one_lab_out", lab, __file__, variant, workdir, args.cpu_devices):
            return 1
        per_lab[lab] = study_driver.read_json(os.path.join(workdir, "summary.json"))
    try:
        study = aggregate(per_lab)
    except ValueError as e:
        print(f"[leave_one_lab_out] {e}", file=sys.stderr)
        return 2
    # The study's summary covers all nine labs; a subset (--labs) gets its own, named after its labs.
    study_driver.write_summary(args.workdir, study, markdown(study), sorted(labs), _labs(), str, args.variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
