"""Mean over dev seeds of the style checks (reads /tmp/style_report/checks_<seed>.json)."""

import json, sys, numpy as np

seeds = [100, 101, 102]
R = [json.load(open(f"/tmp/style_report/checks_{s}.json")) for s in seeds]
labs = ["brightfield", "darkfield", "sem", "lowcontrast"]
methods = [m for m in R[0] if m not in ("validation", "polarity_real")]


def ms(vals):
    v = np.asarray(vals, float)
    return f"{v.mean():.2f}±{v.std():.2f}" if len(v) > 1 else f"{v[0]:.2f}"


print(
    "| method | "
    + " | ".join(f"{l} ratio (tex/glob)" for l in labs)
    + " | polarity agree (dark/bright) | classifier ->target | F1 orig->rest | ARI orig->rest | border ratio | train s |"
)
for m in methods:
    rs = [r[m] for r in R if m in r]
    cells = []
    for l in labs:
        cells.append(
            f"{ms([r['fidelity'][l]['ratio'] for r in rs])} ({np.mean([r['fidelity'][l]['texture']['ratio'] for r in rs]):.2f}/{np.mean([r['fidelity'][l]['global']['ratio'] for r in rs]):.2f})"
        )
    pol = f"{np.mean([r['polarity']['darkfield']['agreement'] for r in rs]):.2f}/{np.mean([r['polarity']['brightfield']['agreement'] for r in rs]):.2f}"
    clf = ms([r["classifier"]["target_fraction_mean"] for r in rs])
    f1 = f"{np.mean([r['structure']['f1_original'] for r in rs]):.3f}->{np.mean([r['structure']['f1_restyled'] for r in rs]):.3f}"
    ari = f"{np.mean([r['structure']['ari_original'] for r in rs]):.3f}->{np.mean([r['structure']['ari_restyled'] for r in rs]):.3f}"
    bor = f"{np.mean([max(r['border_ratio']['restyled'].values()) for r in rs]):.2f}"
    tr = f"{np.mean([r.get('train_seconds', 0) for r in rs]):.0f}"
    print(f"| {m} (n={len(rs)}) | " + " | ".join(cells) + f" | {pol} | {clf} | {f1} | {ari} | {bor} | {tr} |")
print()
for s, r in zip(seeds, R):
    v = r["validation"]
    print(
        s,
        "heldout ratio tex/glob:",
        {
            l: (round(v[l]["texture"]["heldout_ratio"], 3), round(v[l]["global"]["heldout_ratio"], 3))
            for l in labs
        },
        "nearest:",
        {l: v[l]["texture"]["nearest_other_lab"] for l in labs},
    )
print("per-target structure F1 (mean over seeds):")
for m in methods:
    rs = [r[m] for r in R if m in r]
    print(
        " ",
        m,
        {l: round(np.mean([r["structure"]["per_target"][l]["f1_restyled"] for r in rs]), 3) for l in labs},
        "ARI",
        {l: round(np.mean([r["structure"]["per_target"][l]["ari_restyled"] for r in rs]), 3) for l in labs},
    )
