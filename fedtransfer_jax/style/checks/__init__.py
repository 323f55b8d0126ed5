"""Honest style-transfer checks: does a restyled tile look like the target lab, and does it keep its grains?

Three measures, all JSON-able, computed for any restyler ``(images, labels, target_lab, key) -> images``:

1. **Fidelity** (``fidelity_of_sets``): Frechet distance between the descriptors (``style.features``)
   of tiles restyled into lab k and of real held-out tiles of lab k, reported as the ratio
   ``d(restyled -> k, real k) / min_{j != k} d(real j, real k)``: < 1 means the restyled tiles are closer
   to lab k than any other real lab is. It is computed separately for the descriptor's two groups --
   ``texture`` (brightness/contrast-normalised tiles: structure, polarity, sharpness, noise) and
   ``global`` (brightness, contrast, colour) -- and the headline ``ratio`` is the larger of the two, so
   that neither matching global statistics alone nor texture alone passes. ``heldout_ratio`` (a second
   set of real k tiles in place of the restyled ones) is the floor the sample size allows. Descriptors
   are z-scored with the pooled real reference and projected onto its leading principal axes (``dims``),
   so every distance lives in one fixed space and the covariances are estimable from a few dozen tiles.
   Next to it, two diagnostics: **polarity** (sign of mean boundary minus mean interior luminance: does
   "as darkfield" have bright boundaries?) and a **domain classifier** that sees brightness/contrast-
   normalised tiles and is trained with gamma / contrast / brightness jitter, so that matching global
   brightness alone cannot pass.
2. **Structure** (``structure``): boundary F1 and ARI of a centrally trained reference segmenter on the
   restyled tiles against the *unchanged* source labels, per (source, target) pair, vs the same tiles
   before restyling. A restyler that moves or erases boundaries, or produces a style no lab has, loses F1.
3. **Style grid** (``style_grid_figure``): every source lab's tile in every target style, with a row of
   real target-lab tiles, for a person to judge.

The expensive, method-independent parts (descriptor reference, classifier, segmenter) are prepared once
(``prepare``) and reused for every method. Every key derives from one seed via ``jax.random.fold_in``.

Where things live (each module stands alone with its test in tests/test_style_checks_<module>.py):

* ``fidelity`` -- measures on plain arrays: Frechet distance, descriptor space, polarity, border seams;
* ``judges``   -- the two trained judges (domain classifier, reference segmenter) and their Adam fit;
* ``context``  -- ``prepare``: the method-independent ``CheckContext``, and ``validate_measure``;
* ``scoring``  -- ``restyle_all`` / ``evaluate``: one method's report, and ``method_restyler``;
* ``grid``     -- ``style_grid_figure``, the picture for a person to judge.
"""

from fedtransfer_jax.style.checks.context import CheckContext, LabData, Restyler, prepare, validate_measure
from fedtransfer_jax.style.checks.fidelity import (
    GOAL_FIDELITY_RATIO,
    POLARITY_MIN_CONTRAST,
    FidelitySpace,
    border_ratio,
    boundary_contrast,
    describe_all,
    fit_space,
    frechet_distance,
    project,
)
from fedtransfer_jax.style.checks.grid import style_grid_figure
from fedtransfer_jax.style.checks.judges import (
    DomainClassifier,
    in_batches,
    photometric_jitter,
    tile_scores,
    train_classifier,
    train_segmenter,
)
from fedtransfer_jax.style.checks.scoring import evaluate, fidelity_of_sets, method_restyler, restyle_all

__all__ = [
    "GOAL_FIDELITY_RATIO",
    "POLARITY_MIN_CONTRAST",
    "LabData",
    "Restyler",
    "in_batches",
    "frechet_distance",
    "FidelitySpace",
    "fit_space",
    "project",
    "describe_all",
    "boundary_contrast",
    "border_ratio",
    "DomainClassifier",
    "photometric_jitter",
    "train_classifier",
    "train_segmenter",
    "tile_scores",
    "CheckContext",
    "prepare",
    "validate_measure",
    "fidelity_of_sets",
    "restyle_all",
    "evaluate",
    "method_restyler",
    "style_grid_figure",
]
