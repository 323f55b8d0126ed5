"""What the multi-run study drivers share (leave_one_lab_out, lab_count, data_poor): launch one config variant
per part of the study in its own resumable workdir, and write the study's summary (json + md) atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def launch(
    tag: str, part: str, config_file: str, variant: str, workdir: str, cpu_devices: str, overrides=()
) -> bool:
    """`launch.py --config <config_file>[:<variant>] --workdir <workdir> <overrides>` from the repo root; False
    (with a message saying how to resume) when it fails."""
    config = str(Path(config_file).resolve()) + (f":{variant}" if variant else "")
    cmd = [sys.executable, str(REPO / "launch.py"), "--config", config]
    cmd += [f"--cpu_devices={cpu_devices}", "--workdir", workdir, *overrides]
    print(f"[{tag}] {part}: {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd, cwd=REPO).returncode != 0:
        print(f"[{tag}] {part} failed: rerun the same command to resume", file=sys.stderr)
        return False
    return True


def pick(text: str, allowed, flag: str, what: str) -> list | None:
    """The parts of a study a comma-separated flag names (every one of `allowed` when it names none), in
    `allowed`'s order; None, after one line naming the flag, when it names a part the study does not have.
    A numeric part (k, L) matches its number ('04' is 4)."""
    def find(s: str):
        return next((a for a in allowed if str(a) == s or (isinstance(a, int) and s.isdigit() and int(s) == a)), None)

    names = [s for s in text.split(",") if s]
    bad = [s for s in names if find(s) is None]
    if bad:
        print(f"{flag}: unknown {what} {bad[0]!r}; the study's: {', '.join(map(str, allowed))}", file=sys.stderr)
        return None
    chosen = {find(s) for s in names} or set(allowed)
    return [a for a in allowed if a in chosen]


def write_summary(workdir: str, study: dict, markdown: str, parts, allowed, stem_part, variant: str = "") -> None:
    """The study's summary.json / .md when `parts` are all of `allowed`; a subset gets its own,
    summary_<stem_part(part)>_... (a subset is not the study). `complete` and `variant` go into the study."""
    complete = set(parts) == set(allowed)
    study["complete"] = complete
    study["variant"] = variant or "full"
    stem = "summary" if complete else "summary_" + "_".join(stem_part(x) for x in parts)
    write_study(workdir, stem, study, markdown)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def write_study(workdir: str, stem: str, study: dict, markdown: str) -> None:
    from fedtransfer_jax.runtime import io_utils  # noqa: PLC0415

    io_utils.write_text_atomic(os.path.join(workdir, stem + ".json"), json.dumps(study, indent=2) + "\n")
    io_utils.write_text_atomic(os.path.join(workdir, stem + ".md"), markdown)
    print(markdown)


def num(x: float, fmt: str) -> str:
    """A number for a markdown table; NaN (an undefined interval or p) as n/a."""
    return "n/a" if x != x else format(x, fmt)


def comparison_cells(c: dict) -> str:
    """A paired comparison's markdown cells: difference | 95 % CI | p | p (Holm)."""
    return (
        f"{c['diff_mean']:+.3f} | [{num(c['ci_low'], '+.3f')}, {num(c['ci_high'], '+.3f')}] | "
        f"{num(c['p'], '.3g')} | {num(c.get('p_holm', float('nan')), '.3g')}"
    )


def verdict(comparisons: dict, references, primary: str, alpha: float = 0.05) -> dict:
    """The protocols' rule: sharing is shown only if `primary` beats *every* reference (a positive difference
    at Holm p < alpha) in `comparisons` ({"<primary> vs <reference>": paired_comparison + p_holm}). A missing
    reference or an undefined p (fewer than 2 pairs, no spread) leaves the question open rather than
    shrinking the family."""
    refs = [r for r in references if r != primary]
    rows = {r: comparisons.get(f"{primary} vs {r}") for r in refs}
    missing = [r for r, c in rows.items() if c is None or c.get("p_holm") != c.get("p_holm")]
    if missing:
        return {"sharing_shown": None, "why": f"no defined comparison with {', '.join(missing)}"}
    beaten = [r for r, c in rows.items() if c["diff_mean"] > 0 and c["p_holm"] < alpha]
    return {
        "sharing_shown": len(beaten) == len(refs),
        "why": f"{primary} beats {len(beaten)} of {len(refs)} references at Holm p < {alpha}"
        + (f" ({', '.join(beaten)})" if beaten else ""),
    }


def verdict_words(v: dict) -> str:
    return {True: "sharing is shown", False: "sharing is not shown", None: "undetermined"}[v["sharing_shown"]]
