r"""Study (c) of docs/PROTOCOL.md v2: a data-poor recipient lab with 0, 1, 2 and 4 labelled tiles, federated with
the other labs. Does style sharing (the other labs re-rendering their labels in the recipient's style, which the
recipient shares without sharing images) help the recipient's own test ARI, beyond FedAvg and the controls?

  python -m experiments.data_poor --workdir runs/data_poor                     # k = 0, 1, 2, 4; 10 seed pairs
  python -m experiments.data_poor --workdir runs/data_poor --labels 0,4        # some k (resumes the rest later)
  python launch.py --config experiments/data_poor.py:2 --workdir runs/data_poor/k2   # one k by hand
  python -m experiments.data_poor --workdir runs/dp1 --variant session           # one session: k = 0, 1, ~95 min
  python -m experiments.data_poor --workdir runs/dp2 --variant session2          # the next: k = 2, 4, ~85 min
  python -m experiments.data_poor --workdir runs/dp3 --variant confirm           # replication: k = 0, 2, ~80 min
  python -m experiments.data_poor --workdir runs/dp4 --variant rounds40          # the budget check: ~70-85 min
  python -m experiments.data_poor --workdir /tmp/dp --variant tiny --labels 0  # tests: seconds

Clients: the main study's four seen labs (brightfield, darkfield, sem, lowcontrast). The recipient is
`lowcontrast` (RECIPIENT, fixed before any run: its boundaries are the faintest of the four by construction,
the lab where few labels should hurt most; one lab because each costs ~6 h, see below; another with
`--recipient <lab>` / `:<k>,<lab>`, reported as a separate, post-hoc study). It keeps the first k of its 8
training tiles labelled (`data.recipient_labels`, k in 0, 1, 2, 4) and the next 4 as unlabelled images
(`data.recipient_unlabelled = 4`: the same 4 images at every k, so k + 4 <= 8); its labels beyond k and its
validation tiles are dropped on the client (model selection and the post-processing choice use the other
labs' validation tiles; `local` takes the built-in post-processing and its model selection has no validation
tiles: the last round). The other three labs keep their 8 labelled tiles each.

The recipient's style message (data/clients.apply_recipient, runs/style_protocol.recipient_style_data) is
computed on its k labelled tiles and its unlabelled images, on the client, and crosses fl.boundary like any
style message (channel `style_stats`, in the privacy ledger; no image-shaped array). AdaIN (and Fourier, not among this study's methods)
read images only; gen's style fit reads a label map, so on the unlabelled images it gets pseudo-labels from
the label-free classical segmenter (metrics/classical.py: adaptive threshold + clean-up), the simplest honest
option (no label of the recipient, no model that saw it; the federation's initial model is random). With
k = 0 the recipient is no segmentation client (it holds no label): the federation is the other three labs
(all three every round), its style is the bank's extra row, and it is scored as a lab that no segmenter trained
on (`whole_unseen`). AdaIN's shared style network trains federatedly on the segmentation clients' labelled
tiles only (the recipient's unlabelled images are used for its message, not for that network).

Methods: fedavg (k = 0: the other labs' federation, evaluated on the recipient), fedtransfer (AdaIN),
fedtransfer_gen, the controls gen_own_style (every lab re-renders in its own style: the recipient's style
reaches no one) and gen_random_style (prior styles, nothing shared), and local (the recipient alone, k >= 1;
`local` trains every lab's own model, the recipient's is scored). Training as in the main study
(experiments/grains.py:fair: augmentation for every method, cosine schedule, model selection on validation
tiles; 20 rounds x all clients x 10 local steps x batch 8; FedAvg weights updates by tile counts, so a
recipient with k tiles weighs k / (24 + k)). 10 seed pairs (init i, data 1000 + i).

Endpoint: the recipient's post-processed ARI on its 4 whole 256 px test images (v2 primary path,
config.eval.whole_images; read from each seed's summary.json: `whole_images.per_client[<recipient>]`, at k = 0
`whole_images.unseen.per_client[<recipient>]`). Per k: each method's mean with its t-based 95 % CI; the style
methods (fedtransfer_gen, the primary, and fedtransfer) against fedavg, gen_own_style and gen_random_style,
paired over seeds; Holm over every comparison of every k (the study's family). The runner launches one config
per k (<workdir>/k<k>/, each resumable), then writes <workdir>/summary.json and summary.md (with --labels,
summary_k<..>.json / .md: a subset is not the study).

Cost (2-core CPU, an ESTIMATE, not run): the main study took 2 h 27 min for 10 seed pairs x 8 methods beside
other work (~80 s a method on the quiet machine, AdaIN and local ~100 s). Here 6 methods at k >= 1 and 5 at
k = 0 (one fewer client, ~3/4 of a round's work): ~9 min per seed pair, ~1.5 h per k, ~5.5-6 h for the four
k on the quiet machine and ~7-8 h beside other work. Each further recipient lab costs as much again.
`session` (docs/PROTOCOL.md "Study (c) in one session"; `--variant session`): k = 0 and 1, seed pairs 0-6,
fedavg, fedtransfer, fedtransfer_gen and both controls (no local), Holm over its 12 comparisons: ~95 min estimated; it ran in
2 h 14 min wall beside other work (~5-6 min per seed pair and k on the quiet machine; README "A data-poor
lab"); its summary.json is the session part's (`variant`: 'session'). `session2` (`--variant session2`, its
second part, fixed before any of its runs): k = 2 and 4 with the same methods and seed pairs, its own Holm family
of 12, reported apart; ~85 min estimated, 2 h 30 min measured beside other work (2026-12-06; ~5.5 min per seed
pair and k once the machine was quiet; README "A data-poor lab").
`confirm` (`--variant confirm`, the confirmatory replication fixed after both parts and before its runs):
k = 0 and 2, fresh seed pairs 10-19, fedtransfer_gen against fedavg, gen_own_style and gen_random_style (AdaIN
dropped), Holm over those 6; ~80 min estimated on the quiet machine, 2 h 17 min measured beside other work
(2026-12-06; ~1.5-2 min per method run once quiet; README "A data-poor lab": sharing confirmed at both k).
`rounds40` (`--variant rounds40`, docs/PROTOCOL.md "Study (c) at twice the budget", descriptive): `confirm`'s
design with 40 rounds on development seed pairs 0-2, beside their recorded 20-round values; ~70-85 min estimated, 60 min measured (2026-12-06, quiet machine but for small probes).
`tiny` (32 px, one seed pair, fedavg, fedtransfer_gen and local at k >= 1; measured on the loaded 2-core machine:
k = 0 ~35-50 s, k = 1 ~55 s, data and compilation included).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import NamedTuple

_spec = importlib.util.spec_from_file_location("_grains_config", Path(__file__).with_name("grains.py"))
_grains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grains)

SEEN = ("brightfield", "darkfield", "sem", "lowcontrast")
RECIPIENT = "lowcontrast"  # fixed before any run (docstring)
LABELS = (0, 1, 2, 4)
UNLABELLED = 4  # the recipient's unlabelled images at every k (k + 4 <= the 8 training tiles)
METHODS = ("local", "fedavg", "fedtransfer", "fedtransfer_gen", "gen_own_style", "gen_random_style")
PRIMARIES = ("fedtransfer_gen", "fedtransfer")
REFERENCES = ("fedavg", "gen_own_style", "gen_random_style")
TINY_METHODS = ("local", "fedavg", "fedtransfer_gen")


class Part(NamedTuple):
    """A session-sized part of the study (docs/PROTOCOL.md), each its own Holm family, reported apart."""

    labels: tuple[int, ...]
    seeds: tuple[int, ...]  # init seeds i; data seeds 1000 + i
    methods: tuple[str, ...]
    primaries: tuple[str, ...]
    rounds: int = 20  # fl.rounds (the cosine schedule spans them)


SESSION_METHODS = ("fedavg", "fedtransfer", "fedtransfer_gen", "gen_own_style", "gen_random_style")
PARTS = {
    # the exploratory parts: seed pairs 0-6, no `local`
    "session": Part((0, 1), tuple(range(7)), SESSION_METHODS, PRIMARIES),
    "session2": Part((2, 4), tuple(range(7)), SESSION_METHODS, PRIMARIES),
    # the confirmatory replication, fixed after both and before any of its runs: fresh seed pairs 10-19, the
    # primary against the three references only, at k = 0 (no labels) and k = 2
    "confirm": Part((0, 2), tuple(range(10, 20)), ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style"),
                    ("fedtransfer_gen",)),
    # the budget check (development seeds 0-2, descriptive): the replication's design at twice the rounds
    "rounds40": Part((0, 2), (0, 1, 2), ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style"),
                     ("fedtransfer_gen",), rounds=40),
}
VARIANTS = ("tiny",) + tuple(PARTS)


def methods_at(k: int, methods=METHODS) -> tuple[str, ...]:
    """`local` needs labels of the recipient: none at k = 0."""
    return tuple(m for m in methods if k > 0 or m != "local")


def get_config(arg: str | None = None):
    """`:<k>`, `:<k>,<lab>` (the study's budget), with `,session` / `,session2` / `,confirm` (the one-session
    parts, PARTS) or with `,tiny` (the tests'): k labelled recipient tiles."""
    parts = [p for p in (arg or "").split(",") if p]
    tiny = "tiny" in parts
    sessions = [p for p in parts if p in PARTS]
    session = sessions[0] if len(sessions) == 1 else ""
    counts = [p for p in parts if p.isdigit()]
    labs = [p for p in parts if p not in VARIANTS and not p.isdigit()]
    allowed = PARTS[session].labels if session else LABELS
    if (len(counts) != 1 or int(counts[0]) not in allowed or len(labs) > 1 or (labs and labs[0] not in SEEN)
            or len(sessions) > 1 or (tiny and sessions)):
        forms = ", ".join(f"':<k>,{n}'" for n in PARTS)
        raise ValueError(
            f"experiments/data_poor.py: name the recipient's labelled tiles k as the variant (':<k>', ':<k>,<lab>', "
            f"{forms}, ':<k>,tiny'), got {arg!r}; k in {LABELS} "
            f"({' / '.join(f'{v.labels} with {n}' for n, v in PARTS.items())}), lab one of {SEEN} (default {RECIPIENT})"
        )
    k, recipient = int(counts[0]), (labs[0] if labs else RECIPIENT)
    config = _grains.get_config("tiny" if tiny else "fair")
    config.name = f"data-poor-{recipient}-k{k}" + ("-tiny" if tiny else f"-{session}" if session else "")
    config.data.clients = SEEN
    config.data.unseen_clients = ()  # the endpoint is the recipient's own ARI
    config.data.recipient = recipient
    config.data.recipient_labels = k
    config.data.recipient_unlabelled = UNLABELLED
    config.fl.clients_per_round = 0  # every client every round: 4 at k >= 1, the other 3 at k = 0
    config.study_references = REFERENCES
    if tiny:
        config.methods = methods_at(k, TINY_METHODS)
        config.study_references = ("fedavg",)
        config.seeds, config.data_seeds = (0,), (1000,)
        config.data.train_per_client = 8  # the recipient's k + 4 tiles come from its training split
        config.data.val_per_client = 1
        config.eval.select, config.eval.every_rounds = "best_val", 1
        config.fl.lr_schedule = "cosine"
        config.eval.whole_images, config.eval.whole_image_size = 1, 64
        config.figures = False
    elif session:
        part = PARTS[session]
        config.methods = methods_at(k, part.methods)
        config.seeds = part.seeds
        config.data_seeds = tuple(1000 + i for i in part.seeds)
        config.fl.rounds = part.rounds
    else:
        config.methods = methods_at(k)
        config.seeds = tuple(range(10))
        config.data_seeds = tuple(1000 + i for i in range(10))
    return config


def recipient_endpoint(seed_summary: dict, recipient: str) -> dict[str, float]:
    """Per method, the recipient's whole-image post-processed ARI in one seed's summary.json (a segmentation
    client at k >= 1, a lab nobody trained on at k = 0)."""
    out = {}
    for m, entry in seed_summary["methods"].items():
        whole = entry.get("whole_images") or {}
        lab = (whole.get("per_client") or {}).get(recipient) or ((whole.get("unseen") or {}).get("per_client") or {}).get(recipient)
        if lab is None:
            raise ValueError(f"method {m}: no whole-image metrics of the recipient {recipient!r} (eval.whole_images is 0?)")
        out[m] = float(lab["ari"])
    return out


def aggregate(per_k: dict[int, dict[int, dict]], recipient: str, primaries=PRIMARIES, references=REFERENCES) -> dict:
    """The study over k, from {k: {seed: that seed's summary.json}} (same seeds at every k): per k and method
    the recipient's mean ARI with its CI, each style method against each reference paired over seeds, Holm over
    every k's comparisons."""
    from fedtransfer_jax.metrics import stats as stats_lib  # noqa: PLC0415

    seeds = {k: tuple(sorted(s)) for k, s in per_k.items()}
    if len(set(seeds.values())) != 1:
        raise ValueError(f"label counts ran different seeds: {seeds}")
    order = next(iter(seeds.values()))
    out = {"recipient": recipient, "seeds": list(order), "labels": sorted(per_k),
           "endpoint": f"{recipient}'s post-processed ARI on its whole test images", "per_k": {}}
    pvalues = {}
    for k in sorted(per_k):
        rows = [recipient_endpoint(per_k[k][s], recipient) for s in order]
        values = {m: [r[m] for r in rows] for m in rows[0] if all(m in r for r in rows)}
        comparisons = {}
        for p in primaries:
            for ref in references:
                if p in values and ref in values and p != ref:
                    c = stats_lib.paired_comparison(values[p], values[ref])
                    comparisons[f"{p} vs {ref}"] = c
                    pvalues[(k, f"{p} vs {ref}")] = c["p"]
        out["per_k"][k] = {"methods": {m: stats_lib.mean_ci(v) for m, v in values.items()}, "per_seed": values,
                           "comparisons": comparisons}
    for (k, name), p in stats_lib.holm(pvalues).items():
        out["per_k"][k]["comparisons"][name]["p_holm"] = p
    from experiments import study_driver  # noqa: PLC0415

    for entry in out["per_k"].values():  # the protocol's rule, per k and style method
        entry["verdict"] = {p: study_driver.verdict(entry["comparisons"], references, p) for p in primaries if p in entry["methods"]}
    out["per_k"] = {str(k): v for k, v in out["per_k"].items()}
    return out


def markdown(study: dict) -> str:
    from experiments.study_driver import comparison_cells, num, verdict_words  # noqa: PLC0415

    lines = [
        "# A data-poor recipient lab (docs/PROTOCOL.md v2, study c)",
        "",
        f"Recipient {study['recipient']}; k = {', '.join(map(str, study['labels']))} labelled tiles; "
        f"seeds {study['seeds']}. Endpoint: {study['endpoint']}. Holm over every k's comparisons.",
    ]
    for k, entry in study["per_k"].items():
        lines += ["", f"## k = {k} labelled tiles", "", "| method | ARI [95 % CI] |", "|---|---|"]
        for m, s in entry["methods"].items():
            lines.append(f"| {m} | {s['mean']:.3f} [{num(s['ci_low'], '.3f')}, {num(s['ci_high'], '.3f')}] |")
        lines += ["", "| comparison (paired over seeds) | diff | 95 % CI | p | p (Holm) |", "|---|---|---|---|---|"]
        for name, c in entry["comparisons"].items():
            lines.append(f"| {name} | {comparison_cells(c)} |")
        for p, v in (entry.get("verdict") or {}).items():
            lines += ["", f"**{p} at k = {k} (the protocol's rule): {verdict_words(v)}**: {v['why']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--labels", default="", help="comma-separated k (default: 0,1,2,4)")
    parser.add_argument("--recipient", default=RECIPIENT, choices=SEEN)
    parser.add_argument("--variant", default="", choices=("",) + VARIANTS)
    parser.add_argument("--cpu_devices", default="auto")
    args = parser.parse_args(argv)
    from experiments import study_driver  # noqa: PLC0415

    part = PARTS.get(args.variant)
    study_labels = part.labels if part else LABELS
    ks = study_driver.pick(args.labels, study_labels, "--labels", "k")
    if ks is None:
        return 2

    args.workdir = os.path.abspath(args.workdir)  # the launches run from the repo root
    per_k = {}
    for k in ks:
        workdir = os.path.join(args.workdir, f"k{k}")
        variant = f"{k},{args.recipient}" + (f",{args.variant}" if args.variant else "")
        if not study_driver.launch("data_poor", f"k = {k}", __file__, variant, workdir, args.cpu_devices):
            return 1
        seeds = study_driver.read_json(os.path.join(workdir, "summary.json"))["seeds"]
        per_k[k] = {int(s): study_driver.read_json(os.path.join(workdir, f"seed_{s}", "summary.json")) for s in seeds}
    try:
        study = aggregate(per_k, args.recipient, primaries=part.primaries if part else PRIMARIES)
    except ValueError as e:
        print(f"[data_poor] {e}", file=sys.stderr)
        return 2
    study_driver.write_summary(args.workdir, study, markdown(study), ks, study_labels, "k{}".format, args.variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
