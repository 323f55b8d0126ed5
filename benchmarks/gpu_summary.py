"""Collects the outputs of benchmarks/gpu_check.sh into ONE JSON object (printed on stdout).

  python -m benchmarks.gpu_summary OUT_DIR [TOTAL_SECONDS]

Reads OUT/peaks.log and OUT/{round,round_bf16,round_more,torch}.log (the last line of each is the
script's JSON),
OUT/<step>.status ({"rc", "seconds"}) and OUT/scaling/scaling.csv; a missing or failed step is reported
as such (its status and null results), never as an exception.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

STEPS = ("peaks", "round", "scaling", "round_bf16", "round_more", "torch")


def last_json(path: Path) -> dict | None:
    """The last line of a log that parses as a JSON object, else None."""
    if not path.exists():
        return None
    for line in reversed(path.read_text(errors="replace").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _round_summary(rs: dict | None) -> dict | None:
    if rs is None:
        return None
    keep = ("images_per_s", "round_time_s", "min_round_s", "spread", "compile_s", "plans")
    out = {k: rs.get(k) for k in keep}
    out["ratio_vs_step_loop"] = rs.get("ratio_vs_step_loop")
    out["ratio_vs_torch"] = rs.get("ratio_vs_torch")
    out["roofline"] = {
        name: {
            k: r.get(k)
            for k in (
                "dtype",
                "achieved_tflops",
                "achieved_gbps",
                "intensity_flop_per_byte",
                "ridge_flop_per_byte",
                "fraction_of_peak_flops",
                "fraction_of_bandwidth",
                "fraction_of_roofline",
                "bound",
                "flops",
                "bytes",
            )
        }
        for name, r in (rs.get("roofline") or {}).items()
    }
    return out


def _scaling_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    keep = (
        "clients",
        "status",
        "plan_strategy",
        "plan_chunk",
        "round_time_s",
        "per_client_round_ms",
        "images_per_s",
        "memory_bytes",
        "memory_source",
        "model_peak_bytes",
        "compile_s",
    )
    return [{k: r.get(k) or None for k in keep} for r in rows]


def summarize(out_dir: str | Path, total_seconds: float | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    status = {s: last_json(out / f"{s}.status") for s in STEPS}
    peaks = last_json(out / "peaks.log")
    round_main = last_json(out / "round.log")
    summary: dict[str, Any] = {
        "device": (peaks or round_main or {}).get("device"),
        "total_seconds": total_seconds,
        "steps": status,
        "peaks": peaks,
        "round": _round_summary(round_main),
        "round_bf16": _round_summary(last_json(out / "round_bf16.log")),
        "round_more": _round_summary(last_json(out / "round_more.log")),
        "torch": _round_summary(last_json(out / "torch.log")),
        "scaling": _scaling_rows(out / "scaling" / "scaling.csv"),
    }
    r = summary["round"]
    if r and peaks and r["roofline"].get("one_jit"):
        tf = r["roofline"]["one_jit"]["achieved_tflops"]
        summary["auto_fraction_of_bf16_peak"] = (
            tf / peaks["bf16_tflops"] if peaks.get("bf16_tflops") else None
        )
    return summary


def main(argv: list[str]) -> dict[str, Any]:
    if not argv:
        raise SystemExit("usage: gpu_summary.py OUT_DIR [TOTAL_SECONDS]")
    total = float(argv[1]) if len(argv) > 1 else None
    summary = summarize(argv[0], total)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
