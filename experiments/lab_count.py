r"""Study (d) of docs/PROTOCOL.md v2: 2, 4, 8 and 16 labs drawn from the style space at a fixed total number of
labelled tiles. Does sharing styles help more when the same labels are spread over more, more varied labs?

  python -m experiments.lab_count --workdir runs/lab_count                   # L = 2, 4, 8, 16; 10 seed pairs
  python -m experiments.lab_count --workdir runs/lab_count --labs 2,16       # some L (resumes the rest later)
  python launch.py --config experiments/lab_count.py:8 --workdir runs/lab_count/L8   # one L by hand
  python -m experiments.lab_count --workdir runs/lc1 --variant session        # one session: L = 2, 16, ~95 min
  python -m experiments.lab_count --workdir runs/lc2 --variant session2       # the next: L = 4, 8, ~85 min
  python -m experiments.lab_count --workdir /tmp/lc --variant tiny --labs 2  # tests: seconds

Clients: L labs drawn from the population prior (data/prior_labs.py, `data.source='prior_labs'`): each lab one
of the seen labs' four base styles with its own sub-range of every imaging parameter, its own microstructure
and grain-size range (data/population.py). With one data seed the labs are nested (L = 2's labs are the first
two of L = 4's, ...). Fixed labels: 32 training tiles in all (the main study's 4 x 8), 32 // L per lab, and
16 validation tiles in all (4 x 4), 16 // L per lab (model selection gets no more labels at larger L); 16
test tiles and 4 whole 256 px test images per lab (evaluation only). Unseen labs: the main study's five
(tint, tem_brightfield, ebsd_ipf, polarised_al, ceramic_sem), the same test images as there.

Budget, the same for every L: 20 rounds x 2 clients per round x 80 local steps x batch 2 = 6,400 examples,
as many as the main study's 20 x 4 x 10 x 8. Two clients per round because L = 2 has only two; batch 2
because a lab of L = 16 holds 2 tiles (a batch is never larger than a lab's training set, engine.
check_batch_size); 80 local steps to see the main study's number of examples. Otherwise the main study's
training (experiments/grains.py:fair: augmentation for every method, cosine schedule, model selection on
validation tiles) and its 10 seed pairs (init i, data 1000 + i). Methods: fedavg, fedtransfer_gen, both
controls, centralized (`local` is left out: one model per lab at the federation's per-client budget would
cost L times a method).

Endpoint: the unseen labs' post-processed ARI on whole test images (`whole_unseen`); secondary: the same on
the L prior labs' own whole test images (`whole_seen`). Per L: each method's mean with its t-based 95 % CI
over seeds, fedtransfer_gen against fedavg, gen_own_style and gen_random_style paired over seeds; Holm over
the study's family (the three comparisons at every L run, per endpoint). The runner launches one config per
L (<workdir>/L<L>/, each resumable, with its own summary.md: every method and comparison at that L), then
writes <workdir>/summary.json and summary.md, one table per L (with --labs, summary_L<..>.json / .md).

Cost (2-core CPU, an ESTIMATE: the study has not been run). Measured 2026-12-05 beside a running study (load
~4 on 2 cores), fedavg alone, data seed 1000, 4 and 8 rounds: a round of this budget (80 steps of 2 clients x
2 tiles) costs 7.9 s at L = 4 and 8.7 s at L = 16 against 5.1 s for the main study's (10 steps of 4 x 8):
~1.5-1.7x, small batches use XLA:CPU less well, and evaluation grows with L (64 whole images at L = 16 against
16). The main study took 645-660 s per seed pair for 8 methods on the quiet machine (~80 s a method); five
methods at ~1.6x that is ~11-12 min per seed pair and L, so the study (4 L x 10 seed pairs) ~8 h on the quiet
machine and ~10-11 h beside other work (the main study's 2 h 27 min was ~1.35x its quiet time). One L ~2-3 h.
`session` (docs/PROTOCOL.md "Study (d) in one session"; `--variant session`): L = 2 and 16, seed pairs 0-4,
fedavg, fedtransfer_gen and both controls (no centralized): measured 92 min (2026-12-06, partly beside other
work; ~7.5 min per seed pair at L = 2, ~9.5 at L = 16).
`session2` (`--variant session2`, fixed before any of its runs): L = 4 and 8, otherwise as `session`, its own
Holm family, reported apart; ~85 min estimated from `session`'s per-L costs, 80 min measured (2026-12-06,
~7.5-8 min per seed pair and L; README "How many labs").
`tiny` (32 px, one seed pair, fedavg and fedtransfer_gen, 2 rounds): ~45 s per L on the loaded machine.
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

LAB_COUNTS = (2, 4, 8, 16)
METHODS = ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style", "centralized")
REFERENCES = ("fedavg", "gen_own_style", "gen_random_style")
PRIMARY = "fedtransfer_gen"
UNSEEN = ("tint", "tem_brightfield", "ebsd_ipf", "polarised_al", "ceramic_sem")  # study_v2.UNSEEN
TRAIN_TILES = 32  # labelled training tiles over all labs (the main study's 4 labs x 8)
VAL_TILES = 16  # validation tiles over all labs (the main study's 4 x 4)
# The budget of every L (see the docstring): clients per round x local steps x batch = 320 examples a round.
CLIENTS_PER_ROUND, LOCAL_STEPS, BATCH_SIZE = 2, 80, 2
TINY_METHODS = ("fedavg", "fedtransfer_gen")  # the tests' plumbing: one comparison
# The one-session parts (docs/PROTOCOL.md "Study (d) in one session"): L = 2, 16, then L = 4, 8 (`session2`,
# fixed before any of its runs); seed pairs 0-4; no centralized; each part its own Holm family, reported apart.
SESSION_PARTS = {"session": (2, 16), "session2": (4, 8)}
SESSION_METHODS = ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style")
SESSION_SEEDS = tuple(range(5))
VARIANTS = ("tiny",) + tuple(SESSION_PARTS)
ENDPOINTS = {  # summary.json key of a method's whole-image metrics -> what it is
    "whole_unseen": "unseen labs' post-processed ARI on whole test images",
    "whole_seen": "prior labs' own post-processed ARI on whole test images",
}


def get_config(arg: str | None = None):
    """`:<L>` (the study's budget), `:<L>,session` / `:<L>,session2` (the one-session parts: L = 2 or 16 / 4
    or 8, seed pairs 0-4, no centralized) or `:<L>,tiny` (the tests'): L labs drawn from the population prior."""
    parts = [p for p in (arg or "").split(",") if p]
    tiny = "tiny" in parts
    sessions = [p for p in parts if p in SESSION_PARTS]
    session = sessions[0] if sessions else ""
    counts = [p for p in parts if p not in VARIANTS]
    if (
        len(counts) != 1 or not counts[0].isdigit() or int(counts[0]) < 1 or TRAIN_TILES % int(counts[0])
        or len(sessions) > 1 or (session and (tiny or int(counts[0]) not in SESSION_PARTS[session]))
    ):
        raise ValueError(
            f"experiments/lab_count.py: name the number of labs L as the variant (':<L>', ':<L>,session', "
            f"':<L>,session2' or ':<L>,tiny'), got {arg!r}; L must divide the {TRAIN_TILES} training tiles (the "
            f"study runs L = {LAB_COUNTS}, its session parts L = {SESSION_PARTS['session']} and "
            f"{SESSION_PARTS['session2']})"
        )
    labs = int(counts[0])
    config = _grains.get_config("tiny" if tiny else "fair")
    config.name = f"lab-count-{labs}" + ("-tiny" if tiny else f"-{session}" if session else "")
    config.data.source = "prior_labs"
    config.data.prior_labs = labs
    config.data.clients = ()  # the prior labs, prior_00 .. (data/prior_labs.py)
    config.data.train_per_client = TRAIN_TILES // labs
    config.data.val_per_client = max(1, VAL_TILES // labs)
    config.study_references = REFERENCES
    if tiny:
        config.methods = TINY_METHODS
        config.study_references = tuple(r for r in REFERENCES if r in TINY_METHODS)
        config.seeds, config.data_seeds = (0,), (1000,)
        config.data.unseen_clients = ("tint",)
        config.eval.select, config.eval.every_rounds = "best_val", 1
        config.fl.lr_schedule = "cosine"
        config.eval.whole_images, config.eval.whole_image_size = 1, 64
        config.figures = False
    else:
        config.methods = SESSION_METHODS if session else METHODS
        seeds = SESSION_SEEDS if session else tuple(range(10))
        config.seeds = seeds
        config.data_seeds = tuple(1000 + i for i in seeds)
        config.data.unseen_clients = UNSEEN
        config.fl.clients_per_round = CLIENTS_PER_ROUND
        config.fl.local_steps = LOCAL_STEPS
        config.fl.batch_size = BATCH_SIZE
    return config


def endpoint(study: dict, key: str) -> dict[str, list[float]]:
    """Per method, the whole-image post-processed ARI per seed under `key` ('whole_unseen' / 'whole_seen') of
    one L's study summary.json."""
    out = {}
    for m, entry in study["methods"].items():
        whole = entry.get(key)
        if whole is None:
            raise ValueError(f"method {m}: no {key} metrics (config eval.whole_images is 0, or no such labs?)")
        out[m] = list(whole["ari"]["per_seed"])
    return out


def base_styles(labs: int, data_seeds) -> dict[str, list[str]]:
    """Per data seed, the base imaging style of each of the L prior labs (how varied the federation is: at
    small L two labs may share one)."""
    from fedtransfer_jax.data import prior_labs  # noqa: PLC0415

    names = prior_labs.lab_names(labs)
    return {str(s): [prior_labs.describe(name, labs, int(s))["style"] for name in names] for s in data_seeds}


def aggregate(per_count: dict[int, dict], references=REFERENCES, primary: str = PRIMARY) -> dict:
    """The study over L, from each L's study summary.json (same seeds at every L): per L, endpoint and method
    the mean with its CI, and `primary` against each reference paired over seeds; Holm over every L's
    comparisons of one endpoint (the study's family)."""
    from fedtransfer_jax.metrics import stats as stats_lib  # noqa: PLC0415

    seeds = {n: tuple(s["seeds"]) for n, s in per_count.items()}
    if len(set(seeds.values())) != 1:
        raise ValueError(f"lab counts ran different seeds: {seeds}")
    out = {"seeds": list(next(iter(seeds.values()))), "lab_counts": sorted(per_count), "endpoints": ENDPOINTS}
    per_l = {}
    for n, s in per_count.items():  # summary.json's data_seeds: {seed: data seed} (runs/sweep.py)
        per_l[n] = {"base_styles": base_styles(n, (s.get("data_seeds") or {}).values()), "endpoints": {}}
    for key in ENDPOINTS:
        pvalues = {}
        for n in sorted(per_count):
            values = endpoint(per_count[n], key)
            comparisons = {}
            for ref in references:
                if ref in values and primary in values and ref != primary:
                    c = stats_lib.paired_comparison(values[primary], values[ref])
                    comparisons[f"{primary} vs {ref}"] = c
                    pvalues[(n, f"{primary} vs {ref}")] = c["p"]
            per_l[n]["endpoints"][key] = {
                "methods": {m: stats_lib.mean_ci(v) for m, v in values.items()},
                "per_seed": values,
                "comparisons": comparisons,
            }
        for (n, name), p in stats_lib.holm(pvalues).items():
            per_l[n]["endpoints"][key]["comparisons"][name]["p_holm"] = p
    from experiments import study_driver  # noqa: PLC0415

    for entry in per_l.values():  # the protocol's rule, on the primary endpoint
        entry["verdict"] = study_driver.verdict(entry["endpoints"]["whole_unseen"]["comparisons"], references, primary)
    out["per_lab_count"] = {str(n): per_l[n] for n in sorted(per_l)}
    return out


def markdown(study: dict) -> str:
    from experiments.study_driver import comparison_cells, num, verdict_words  # noqa: PLC0415

    lines = [
        "# Number of labs at a fixed number of labels (docs/PROTOCOL.md v2, study d)",
        "",
        f"L = {', '.join(map(str, study['lab_counts']))} labs drawn from the population prior; "
        f"seeds {study['seeds']}.",
        "Primary: " + ENDPOINTS["whole_unseen"] + "; secondary: " + ENDPOINTS["whole_seen"] + ".",
        "Holm over every L's comparisons of one endpoint.",
    ]
    for n, entry in study["per_lab_count"].items():
        lines += ["", f"## L = {n} labs", ""]
        ends = entry["endpoints"]
        styles = [len(set(v)) for v in entry.get("base_styles", {}).values()]
        if styles:
            mean = sum(styles) / len(styles)
            lines += [f"Distinct base styles among the labs, mean over data seeds: {mean:.1f}.", ""]
        methods = list(ends["whole_unseen"]["methods"])
        lines += ["| method | unseen ARI [95 % CI] | prior labs' ARI [95 % CI] |", "|---|---|---|"]
        for m in methods:
            cells = []
            for key in ENDPOINTS:
                s = ends[key]["methods"][m]
                cells.append(f"{s['mean']:.3f} [{num(s['ci_low'], '.3f')}, {num(s['ci_high'], '.3f')}]")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "| comparison (paired over seeds) | endpoint | diff | 95 % CI | p | p (Holm) |"]
        lines.append("|---|---|---|---|---|---|")
        for key, label in (("whole_unseen", "unseen"), ("whole_seen", "prior labs")):
            for name, c in ends[key]["comparisons"].items():
                lines.append(f"| {name} | {label} | {comparison_cells(c)} |")
        v = entry.get("verdict")
        if v:
            lines += ["", f"**L = {n}, unseen labs (the protocol's rule): {verdict_words(v)}**: {v['why']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--labs", default="", help="comma-separated lab counts L (default: every L of the study or of its --variant part)")
    parser.add_argument("--variant", default="", choices=("",) + VARIANTS)
    parser.add_argument("--cpu_devices", default="auto")
    args = parser.parse_args(argv)
    from experiments import study_driver  # noqa: PLC0415

    study_counts = SESSION_PARTS.get(args.variant, LAB_COUNTS)
    counts = study_driver.pick(args.labs, study_counts, "--labs", "lab count")
    if counts is None:
        return 2

    args.workdir = os.path.abspath(args.workdir)  # the launches run from the repo root
    per_count = {}
    for n in counts:
        workdir = os.path.join(args.workdir, f"L{n}")
        variant = str(n) + (f",{args.variant}" if args.variant else "")
        if not study_driver.launch("lab_count", f"L = {n}", __file__, variant, workdir, args.cpu_devices):
            return 1
        per_count[n] = study_driver.read_json(os.path.join(workdir, "summary.json"))
    try:
        study = aggregate(per_count)
    except ValueError as e:
        print(f"[lab_count] {e}", file=sys.stderr)
        return 2
    # The study's summary covers all its L; a subset (--labs) gets its own, named after its L.
    study_driver.write_summary(args.workdir, study, markdown(study), counts, study_counts, "L{}".format, args.variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
