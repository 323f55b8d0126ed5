"""The checks' prepared state: everything that does not depend on the style technique under test.

The descriptor space, the real labs' distances to each other, their boundary polarity and the two judges
are the expensive part of the checks; ``prepare`` builds them once from held-out real tiles and every
method is then scored against the same ``CheckContext`` (``scoring.evaluate``). Every key derives from
one seed via ``jax.random.fold_in`` with the tags below.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from fedtransfer_jax.style.checks.fidelity import (
    boundary_contrast,
    describe_all,
    fit_space,
    frechet_distance,
    project,
)
from fedtransfer_jax.style.checks.judges import train_classifier, train_segmenter
from fedtransfer_jax.style.features import GROUPS, Descriptor, describe, make_descriptor

Array = jax.Array
LabData = Mapping[str, tuple[np.ndarray, np.ndarray]]  # lab -> (images [N,H,W,3] f32, labels [N,H,W] u8)
Restyler = Callable[[np.ndarray, np.ndarray, str, Array], np.ndarray]

# fold_in tags of the checks' keys, all in one place so that they stay distinct.
_TAG_CLASSIFIER, _TAG_SEGMENTER, _TAG_RESTYLE, _TAG_GRID = 0xC1A55, 0x5E6, 0x2E5, 0x6217


def _split(images: np.ndarray, labels: np.ndarray) -> tuple[tuple, tuple]:
    """Even / odd split of a lab's held-out tiles: (reference half, query half)."""
    return (images[0::2], labels[0::2]), (images[1::2], labels[1::2])


class CheckContext(NamedTuple):
    """Everything method-independent: the labs' held-out tiles, the descriptor space, the reference
    distances, the classifier and the segmenter (built once by ``prepare``)."""

    labs: tuple  # every real lab available (targets and possible "other labs")
    targets: tuple  # labs that have shared styles (restyling targets)
    reference: dict  # lab -> (images, labels): real reference half
    query: dict  # lab -> (images, labels): real query half (held-out real; restyling sources)
    descriptor: Descriptor
    describe: Callable  # jitted images -> {group: [N, D_g]}
    spaces: dict  # group -> FidelitySpace
    ref_feats: dict  # group -> lab -> projected descriptors of the reference half
    real_distance: dict  # group -> real_distance[j][k] = d(real query j, real reference k)
    polarity: dict  # lab -> median boundary contrast of its real tiles
    classify: Callable | None
    segment: Callable | None
    config: dict


def prepare(
    heldout: LabData,
    targets: Sequence[str],
    seed: int,
    *,
    dims: int = 24,
    classifier_steps: int = 400,
    segmenter_steps: int = 600,
    segmenter_data: LabData | None = None,
) -> CheckContext:
    """Build the method-independent parts of the checks.

    Args:
      heldout: real tiles per lab that no style technique saw (split even/odd into reference / query halves).
      targets: the labs that are restyling targets (have styles in the bank); the others only serve as
        "other labs" in the fidelity ratio.
      seed: every key is ``fold_in(PRNGKey(seed), tag)``.
      dims: principal axes of the descriptor space (capped by the number of reference tiles).
      classifier_steps / segmenter_steps: 0 skips the domain classifier / the structure check.
      segmenter_data: tiles to train the reference segmenter on (default: the reference halves).
    """
    labs = tuple(heldout)
    missing = [t for t in targets if t not in heldout]
    if missing:
        raise ValueError(f"checks.prepare: targets {missing} have no held-out tiles")
    desc = make_descriptor()
    feat_fn = jax.jit(lambda x: describe(desc, x))
    halves = {l: _split(*heldout[l]) for l in labs}
    reference = {l: h[0] for l, h in halves.items()}
    query = {l: h[1] for l, h in halves.items()}
    raw_ref = {l: describe_all(feat_fn, reference[l][0]) for l in labs}
    raw_q = {l: describe_all(feat_fn, query[l][0]) for l in labs}
    n_min = min(len(reference[l][0]) for l in labs)
    spaces, ref_feats, real_distance = {}, {}, {}
    for g in GROUPS:
        pooled = np.concatenate([raw_ref[l][g] for l in labs])
        spaces[g] = fit_space(pooled, min(dims, max(n_min - 1, 1)))
        ref_feats[g] = {l: project(spaces[g], raw_ref[l][g]) for l in labs}
        q = {l: project(spaces[g], raw_q[l][g]) for l in labs}
        real_distance[g] = {j: {k: frechet_distance(q[j], ref_feats[g][k]) for k in labs} for j in labs}
    polarity = {l: float(np.median(boundary_contrast(*heldout[l]))) for l in labs}

    key = jax.random.PRNGKey(seed)
    classify = None
    if classifier_steps > 0:
        x = np.concatenate([reference[l][0] for l in targets])
        y = np.concatenate([np.full(len(reference[l][0]), i) for i, l in enumerate(targets)])
        classify = train_classifier(
            x, y, len(targets), jax.random.fold_in(key, _TAG_CLASSIFIER), steps=classifier_steps
        )
    segment = None
    if segmenter_steps > 0:
        src = segmenter_data or {l: reference[l] for l in targets}
        segment = train_segmenter(
            np.concatenate([v[0] for v in src.values()]),
            np.concatenate([v[1] for v in src.values()]),
            jax.random.fold_in(key, _TAG_SEGMENTER),
            steps=segmenter_steps,
        )
    return CheckContext(
        labs=labs,
        targets=tuple(targets),
        reference=reference,
        query=query,
        descriptor=desc,
        describe=feat_fn,
        spaces=spaces,
        ref_feats=ref_feats,
        real_distance=real_distance,
        polarity=polarity,
        classify=classify,
        segment=segment,
        config={
            "seed": seed,
            "dims": {g: int(sp.axes.shape[1]) for g, sp in spaces.items()},
            "classifier_steps": classifier_steps,
            "segmenter_steps": segmenter_steps,
            "n_reference": {l: len(reference[l][0]) for l in labs},
            "n_query": {l: len(query[l][0]) for l in labs},
            "groups": list(GROUPS),
        },
    )


def validate_measure(ctx: CheckContext) -> dict:
    """Sanity of the fidelity measure itself, per descriptor group: held-out real k vs real k must be far
    below 1, every other real lab >= 1 by construction; also names each lab's nearest other lab."""
    out = {}
    for k in ctx.labs:
        out[k] = {}
        for g in GROUPS:
            dist = ctx.real_distance[g]
            others = {j: dist[j][k] for j in ctx.labs if j != k}
            nearest = min(others, key=others.get)
            out[k][g] = {
                "heldout_distance": dist[k][k],
                "nearest_other_lab": nearest,
                "nearest_other_distance": others[nearest],
                "heldout_ratio": dist[k][k] / max(others[nearest], 1e-12),
                "other_lab_ratios": {j: d / max(others[nearest], 1e-12) for j, d in others.items()},
            }
    return out


__all__ = ["LabData", "Restyler", "CheckContext", "prepare", "validate_measure"]
