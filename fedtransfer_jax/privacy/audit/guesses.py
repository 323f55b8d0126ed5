"""The guesses of a one-run audit (shared by `one_run` and `fdp_one_run`): after the run, "in" for the k+
highest canary scores, "out" for the k- lowest, abstain on the rest; the guess sizes tried, as fractions of
the canaries (each tested at beta / len(fractions): choosing the best size after seeing the scores keeps
the overall confidence)."""

from __future__ import annotations

import numpy as np

def guess_from_scores(scores: np.ndarray, k_plus: int, k_minus: int) -> np.ndarray:
    """+1 ("in") for the k+ highest scores, -1 ("out") for the k- lowest, 0 (abstain) elsewhere."""
    scores = np.asarray(scores, np.float64)
    m = scores.shape[0]
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise ValueError(f"need k+, k- >= 0 and k+ + k- <= m = {m}, got {k_plus}, {k_minus}")
    order = np.argsort(-scores, kind="stable")
    out = np.zeros(m, np.int8)
    out[order[:k_plus]] = 1
    out[order[m - k_minus :]] = -1
    return out


DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
