"""Privacy audit: what an honest-but-curious server can reconstruct from what the clients send it.

Every attack is scored against the baseline "a random real image of the same lab" (what the attacker gets
for free from knowing which lab a client is and what such micrographs look like), and against a control
run that had no information from the client:

- `scores`: reconstruction scores (SSIM, PSNR, boundary F1, low-pass and amplitude correlations) next to
  the lab baseline, and the victim/control protocol every message inversion is scored by.
- `statistics_inversion`: (a) invert a client's shared style statistics back into the image (generic over
  the statistics; a message fitted with the tile's label map is attacked with a guessed label).
- `gen_inversion`: what (a) needs for the `gen` method's message (a smooth equivalent of `fit_style`).
- `gradient_inversion`: (b) invert one client's model delta (Geiping et al. 2020), with and without DP.
- `property_inference`: (c) predict a tile's grain statistics from its message.
- `report`: measured leaks and the markdown report; `run`: the audit of a finished workdir.
- `one_run`: the empirical epsilon lower bound of DP-FedAvg from one training run with canary clients
  (Steinke, Nasr & Jagielski 2023), beside the accountant's epsilon; `python -m
  fedtransfer_jax.privacy.audit.one_run --out DIR` writes DIR/audit.json (not re-exported here, so that
  `python -m` runs it without importing it twice); `fdp_one_run`: the tighter f-DP (Gaussian DP) bound on the
  same run (Mahloujifar, Melis & Chaudhuri 2024), reported beside it in every audit.json row.

Which style techniques are attacked, and how, comes from the style registry: every registered method declares
a `StyleAudit` (style/techniques/base.py). `python -m fedtransfer_jax.audit --workdir W` is the command line.
"""

from fedtransfer_jax.privacy.audit.gen_inversion import (
    GEN_MATCHED_FIELDS,
    fit_style_gradients,
    gen_attack_context,
    gen_attack_statistics,
    gen_invariants,
    gen_inversion_audit,
    gen_message,
)
from fedtransfer_jax.privacy.audit.gradient_inversion import (
    dp_release,
    gradient_inversion_audit,
    invert_gradients,
    local_delta,
    tiny_segmenter,
)
from fedtransfer_jax.privacy.audit.property_inference import (
    PROPERTY_TARGETS,
    flatten_messages,
    grain_structure,
    loo_r2,
    loo_ridge_operator,
    message_features,
    property_inference,
    property_inference_audit,
)
from fedtransfer_jax.privacy.audit.report import leaked_scores, measured_leaks, report_markdown, write_report
from fedtransfer_jax.privacy.audit.run import (
    AuditSettings,
    load_workdir_clients,
    run_workdir_audit,
    style_audits,
    style_stats_fns,
)
from fedtransfer_jax.privacy.audit.scores import (
    amplitude_correlation,
    edge_map,
    lowpass_correlation,
    psnr,
    score_reconstruction,
    ssim,
    summarize,
)
from fedtransfer_jax.privacy.audit.statistics_inversion import (
    invert_statistics,
    label_guess_inversion_audit,
    style_inversion_audit,
    total_variation,
)

__all__ = [
    "GEN_MATCHED_FIELDS",
    "PROPERTY_TARGETS",
    "AuditSettings",
    "amplitude_correlation",
    "dp_release",
    "edge_map",
    "fit_style_gradients",
    "flatten_messages",
    "gen_attack_context",
    "gen_attack_statistics",
    "gen_invariants",
    "gen_inversion_audit",
    "gen_message",
    "gradient_inversion_audit",
    "grain_structure",
    "invert_gradients",
    "invert_statistics",
    "label_guess_inversion_audit",
    "leaked_scores",
    "load_workdir_clients",
    "local_delta",
    "loo_r2",
    "loo_ridge_operator",
    "lowpass_correlation",
    "measured_leaks",
    "message_features",
    "property_inference",
    "property_inference_audit",
    "psnr",
    "report_markdown",
    "run_workdir_audit",
    "score_reconstruction",
    "ssim",
    "style_audits",
    "style_inversion_audit",
    "style_stats_fns",
    "summarize",
    "tiny_segmenter",
    "total_variation",
    "write_report",
]
