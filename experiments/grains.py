r"""Federated grain-boundary segmentation on style-non-IID synthetic labs (the main job).

  python launch.py --config experiments/grains.py --workdir runs/grains
  python launch.py --config experiments/grains.py:smoke --workdir /tmp/smoke   # plumbing check, 3-8 min

Four client labs (brightfield, darkfield, sem, lowcontrast), each with its own imaging style and grain
sizes (data/synthetic.py), plus one unseen lab (tint) that no method trains on; the protocol (splits,
seeds, primary metric, what counts as a win) is fixed in docs/PROTOCOL.md. Methods: local (each lab
alone), fedavg, fedprox, fedtransfer (AdaIN style sharing, the paper's), fedtransfer_fourier (Fourier
amplitude style sharing), fedtransfer_gen (parametric label-conditioned imaging model, style/techniques/gen.py),
its two controls gen_own_style (the same re-rendering in each lab's own styles) and gen_random_style
(styles drawn from a broad prior, nothing shared), centralized (pooled data and a pooled trainer, no
privacy). Every method trains with the same augmentation (config.augment) and logs validation metrics every
5 rounds (metrics.jsonl, convergence.png). More methods (scaffold, feddyn, fedadam, dp_fedavg, fedavg_secagg,
...) are defined in `method_specs` and picked with `--config.methods=...`; experiments/grains_seeds.py runs
this job over the three test seeds, experiments/privacy.py the DP-FedAvg curve.

Cost (2-core CPU, JAX 0.10.2): measured 2026-11-27 for the seven methods without augmentation and
validation: 6.9 min wall (414 s, seed 0; ~700 CPU-s) with one XLA:CPU device per core
(launch.py --cpu_devices=auto): federated methods 41-50 s each, fedtransfer (AdaIN, incl. its 15 federated
style-network rounds) 86 s, local 58 s, centralized 51 s; every method compiles its round once. Since
2026-12-05 the job also runs the two controls (~45 s each), augments every batch (~3 % of a local step) and
scores the validation tiles every 5 rounds. Re-timed 2026-12-06 (the nine methods, seed 0, `--workdir W`
and nothing else, the machine idle but for a minute of light editing): 14 min 32 s wall, 23.7 CPU-min; per
method 66-115 s (local 111 s, fedtransfer 115 s, centralized 88 s), the rest data generation and the
whole-image endpoint: at the 15-minute limit the issue tracker sets for this job.
`smoke` ~3.3 min on an idle machine (7m49s on a busy one). `tiny`: seconds (tests).

`fair` (python launch.py --config experiments/grains.py:fair --workdir runs/grains_fair): the default job with
a cosine client learning-rate schedule (fl.lr_schedule='cosine', from client_lr to 0 over the rounds) and
model selection on the validation tiles (eval.select='best_val', scored every 2 rounds) for every method;
the centralized baseline is the pooled trainer in both. Cost over the default: the validation scoring, 4
tiles per lab at 10 of the 20 rounds (about 10 x 16 tile forward passes + metrics per federation, i.e. per
method and per local client model) and one small params checkpoint whenever the validation ARI improves:
a few seconds per method on the 2-core CPU (not timed yet; the default's every_rounds=5 does 4 of them).
"""

import ml_collections

from fedtransfer_jax.data import augment
from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.style import techniques


# Secure aggregation (privacy/secagg.py): fixed-point ranges per contribution entry ('x' = weight x update,
# 'w' = weight: up to the largest example count, 'loss' = weight x loss).
SECURE = {
    "enabled": False,
    "bits": 32,
    "clip_range": {"default": 1.0, "w": 4096.0, "loss": 4096.0},
    "neighbours": 0,  # 0 = complete graph (Bonawitz et al.); k = k-regular graph (Bell et al. 2020)
    "rounding": "stochastic",
    "self_mask": True,
    "threshold": 0,  # 0 = a majority of the sampled clients
}


def dp(noise_multiplier: float, clip_norm: float = 0.1, *, adaptive: bool = True) -> dict:
    """DP-FedAvg aggregator spec (privacy/dp.py) with its accountant settings (engine.privacy_accounting)."""
    return {
        "name": "dp",
        "clip_norm": clip_norm,  # initial clip norm when adaptive
        "noise_multiplier": noise_multiplier,  # z: the total noise (update + clipped count when adaptive)
        "adaptive": adaptive,  # Andrew et al. 2021: track the target quantile of the update norms
        "target_quantile": 0.5,
        "clip_lr": 0.2,
        "clipped_count_stddev": 0.0,  # 0 = max(0.05 x clients per round, z) (privacy/dp.py)
        "report_loss": False,
        "delta": 1e-5,  # accountant (engine.privacy_accounting)
        "accountant": "rdp",  # 'rdp' | 'pld'
    }


def dpsgd(noise_multiplier: float, units_per_batch: float, clip_norm: float = 1.0, *, max_units_per_step: int = 0) -> dict:
    """Example-level DP-SGD spec (privacy/dpsgd.py: per-micrograph clipping inside every lab; accountant
    settings in engine.example_privacy_accounting). One 64 px tile is one micrograph in these labs."""
    return {
        "noise_multiplier": noise_multiplier,
        "clip_norm": clip_norm,
        "units_per_batch": units_per_batch,
        "tiles_per_unit": 1,
        "max_units_per_step": max_units_per_step,
        "delta": 1e-5,
        "accountant": "rdp",
    }


def method(
    algorithm: str = "fedavg",
    *,
    kind: str = "federated",
    style: str = "",
    style_targets: str = "foreign",
    aggregator=None,
    secure=False,
    dpsgd=None,
    **hparams,
):
    """A method spec with every hyper-parameter of its algorithm present (so each can be overridden on the
    command line: --config.method_specs.fedprox.hparams.mu=0.1). `style_targets='own'`: the control that
    renders each lab's labels in its own style only (augmentation without sharing)."""
    spec = {
        "kind": kind,
        "algorithm": algorithm,
        "hparams": algorithms.resolve_hparams(algorithm, hparams, f"method {algorithm}"),
        "style": style,
        "aggregator": aggregator or {"name": "mean"},
        "secure": {**SECURE, "enabled": bool(secure)},
    }
    if style_targets != "foreign":  # only where set: workdirs written before the key existed still resume
        spec["style_targets"] = style_targets
    if dpsgd:  # likewise
        spec["dpsgd"] = dict(dpsgd)
    return spec


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "smoke", "tiny", "fair"):
        raise ValueError(f"experiments/grains.py: unknown variant {variant!r}; choose default, smoke, tiny or fair")
    config = ml_collections.ConfigDict()
    config.name = "grains" if variant == "default" else f"grains-{variant}"
    config.seed = 0
    config.seeds = ()  # non-empty: one run per seed in <workdir>/seed_<s>/ + mean ± std (fedtransfer_jax/runs/sweep.py)
    config.data_seeds = ()  # one data seed per seed (empty: the data seed is the seed)
    config.study_references = ("fedavg",)  # baselines/controls every method is compared with (paired, Holm)
    config.methods = (
        "local",
        "fedavg",
        "fedprox",
        "fedtransfer",
        "fedtransfer_fourier",
        "fedtransfer_gen",
        "gen_own_style",  # control: the same re-rendering in the lab's own styles
        "gen_random_style",  # control: re-rendering in styles drawn from a broad prior, nothing shared
        "centralized",
    )
    # What each method is (engine.py): an algorithm with its own hyper-parameters, a style technique, an
    # aggregator. Methods not in config.methods are defined so that `--config.methods=...` can pick them.
    config.method_specs = ml_collections.ConfigDict(
        {
            "local": method(kind="local"),
            "centralized": method(kind="centralized"),
            "fedavg": method("fedavg"),
            "fedprox": method("fedprox", mu=0.01),
            "fedtransfer": method("fedavg", style="adain"),
            "fedtransfer_fourier": method("fedavg", style="fourier"),
            "fedtransfer_gen": method("fedavg", style="gen"),
            # Controls (docs/PROTOCOL.md): the same re-rendering in the lab's own style, no foreign style;
            # and in styles drawn from a broad prior over gen's imaging parameters, no lab's statistics.
            "gen_own_style": method("fedavg", style="gen", style_targets="own"),
            "gen_random_style": method("fedavg", style="gen", style_targets="random"),
            "fedavgm": method("fedavgm"),
            "fedadam": method("fedadam"),
            "fedyogi": method("fedyogi"),
            "scaffold": method("scaffold"),
            "feddyn": method("feddyn"),
            "fedavg_secagg": method("fedavg", secure=True),
            "dp_fedavg": method("fedavg", aggregator=dp(1.0)),
        }
    )
    # Start every method from a trained model instead of the seed's random init: 'shipped' (the package's
    # model, docs/MODEL.md) or the workdir of an earlier run (init_from_method: its method; '' = its best by
    # validation). Its model keys must match (model.features).
    config.init_from = ""
    config.init_from_method = ""
    config.distributed = False  # True on multi-host pods/clusters: jax.distributed.initialize()
    config.checkpoint_every = 5  # rounds
    config.quiet = False  # no progress bars
    config.figures = True  # style grids and prediction overlays in the workdir

    # --- data --------------------------------------------------------------------------------------------
    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"  # 'synthetic' | 'folder'
    config.data.dir = ""  # folder source: DIR/<client>/{images,labels}/
    config.data.clients = ("brightfield", "darkfield", "sem", "lowcontrast")
    config.data.unseen_clients = ("tint",)  # evaluated only, never trained on
    config.data.image_size = 64
    config.data.tile_size = 64
    config.data.tile_overlap = 0
    # docs/PROTOCOL.md: few labels per lab (8 training tiles), 16 test tiles per lab and for the unseen lab,
    # 4 validation tiles per lab (only to choose the post-processing; the primary metrics are raw).
    config.data.train_per_client = 8
    config.data.test_per_client = 16
    config.data.val_per_client = 4
    config.data.val_fraction = 0.0  # folder source: fraction of training images held out for validation
    config.data.train_groups = 0  # folder source: > 0 keeps this many labelled training micrographs per client
    config.data.test_fraction = 0.25  # folder source: fraction of full images held out
    config.data.group_regex = ""  # folder source: regex, group 1 = full-image id
    config.data.invert_labels = False
    config.data.pixel_size_um = 0.0
    config.data.seed = 0
    config.data.boundary_width = 2
    # Scale-robust data (experiments/pretrained.py): (lo, hi) px draws each image's mean grain diameter
    # log-uniformly for every lab ((): each lab's own range); boundary_width_max > boundary_width draws each
    # training image's label line width in [boundary_width, boundary_width_max] px (0: fixed; validation and
    # test labels keep boundary_width).
    config.data.grain_diameter_px = ()
    config.data.boundary_width_max = 0
    # 'stretch' maps every whole image's 0.5-99.5 intensity percentiles to [0, 1] in training and in predict
    # (data/intensity.py): exposure and gain stop mattering. The studies keep 'raw' (their protocol).
    config.data.intensity = "raw"
    config.data.tfds_dir = ""  # default <workdir>/tfds

    # --- model -------------------------------------------------------------------------------------------
    config.model = ml_collections.ConfigDict()
    config.model.name = "unet"
    config.model.features = (16, 32, 64)
    config.model.groups = 8
    config.model.conv_impl = ""  # '' = best measured for the backend (models/conv.py)
    config.model.dtype = "float32"  # or 'bfloat16' compute
    config.model.remat = False  # jax.checkpoint the conv blocks

    config.loss = ml_collections.ConfigDict()
    config.loss.boundary_weight = 3.0
    config.loss.dice_weight = 1.0
    config.loss.cldice_weight = 0.0  # centreline Dice (models/losses.py): off

    # --- federated optimisation ----------------------------------------------------------------------------
    config.fl = ml_collections.ConfigDict()
    config.fl.rounds = 20
    config.fl.clients_per_round = 4  # 0 = all clients
    config.fl.local_steps = 10
    config.fl.batch_size = 8
    # A client with fewer tiles than a batch repeats them within it (fl/base.batch_indices); a batch larger
    # than *every* client's set is refused as a likely typo unless this says the repeats are meant.
    config.fl.allow_batch_repeats = False
    config.fl.client_optimizer = "adam"
    config.fl.client_lr = 2e-3
    config.fl.client_momentum = 0.0
    config.fl.clip_norm = 0.0  # client gradient clipping (global norm; 0 = off)
    config.fl.dropout_rate = 0.0  # probability that a sampled client's update never arrives
    config.fl.strategy = "auto"  # 'auto' (measured best per backend) | 'vmap' | 'chunked' | 'sequential'
    config.fl.chunk_size = 0
    config.fl.unroll_local_steps = False
    config.fl.shard_clients = True  # shard the client axis over all devices
    # Client learning-rate schedule over the rounds (fl/optimizers.py make_schedule), the same for every method
    # (round r's local steps use lr(r); centralized's steps of round r too): 'constant' | 'cosine'.
    config.fl.lr_schedule = "constant"
    config.fl.lr_warmup_rounds = 0  # cosine: linear warmup rounds
    config.fl.lr_final_fraction = 0.0  # cosine: lr at the end of the run / client_lr

    # --- FedTransfer style sharing (methods fedtransfer, fedtransfer_fourier, fedtransfer_gen) ----------
    config.style = ml_collections.ConfigDict()
    # Every style technique's own keys with their defaults, each written once in its module (DEFAULTS of
    # style/techniques/adain.py: features, padding, alpha, ...; fourier.py: fourier_*; gen.py: gen_*).
    config.style.update(techniques.config_defaults())
    # The sharing protocol's keys (style_protocol.py), common to every method:
    config.style.rounds = 15  # federated rounds of style-network training
    config.style.local_steps = 8
    config.style.lr = 2e-3
    config.style.styles_per_client = 8  # style vectors each client shares
    config.style.prior_styles = 256  # style_targets='random' (control): styles drawn from the technique's prior
    config.style.mix_prob = 0.5  # fraction of every local batch restyled into foreign styles
    config.style.restyle = "online"  # 'online' (inside the jitted local step) | 'precomputed'
    config.style.precomputed_copies = 2  # 'precomputed': restyled copies of each training image
    # Style checks in summary.json (style/checks/): domain-classifier steps (0 = skip); reference
    # segmenter steps when the run has no centralized model to judge structure.
    config.style.check_classifier_steps = 200
    config.style.check_segmenter_steps = 300

    # --- augmentation (data/augment.py: ops, order, ranges) --------------------------------------------------
    # Every method's local step augments its batches alike (the style methods after their re-rendering),
    # so a style method is not the only augmented one; enabled=False reproduces runs without augmentation.
    config.augment = ml_collections.ConfigDict(dict(augment.DEFAULTS))

    # --- evaluation ----------------------------------------------------------------------------------------
    config.eval = ml_collections.ConfigDict()
    config.eval.threshold = 0.5
    config.eval.tolerance = 2.0  # boundary F1 pixel tolerance
    # Validation curves (metrics.jsonl rows with eval='val', convergence.png): every k rounds and after the
    # last, on the validation tiles (never test); scoring does not touch training (same trained params).
    config.eval.every_rounds = 5  # 0 = off
    config.eval.select = "last"  # params scored on test: 'last' | 'best_val' (best validation ARI)
    # docs/PROTOCOL.md v2 primary endpoint: per seen and unseen synthetic lab, this many whole test images of
    # whole_image_size px (their own seed path, 'test_whole'), each through predict's sliding window,
    # post-processed with the choice made on validation tiles (methods.<m>.whole_images; 0 = off).
    config.eval.whole_images = 4
    config.eval.whole_image_size = 256

    if variant == "smoke":
        config.data.test_per_client = 8
        config.data.val_per_client = 2
        config.fl.rounds = 10
        config.fl.local_steps = 6
        config.style.rounds = 6
        config.style.local_steps = 6
    elif variant == "fair":  # the default job, every method with a cosine schedule, chosen on validation
        config.fl.lr_schedule = "cosine"
        config.eval.select = "best_val"
        config.eval.every_rounds = 2
    elif variant == "tiny":  # for tests: seconds, not minutes
        config.methods = tuple(m for m in config.methods if m not in ("gen_own_style", "gen_random_style"))
        config.data.image_size = 32
        config.data.tile_size = 32
        config.data.train_per_client = 4
        config.data.test_per_client = 2
        config.data.val_per_client = 0
        config.data.unseen_clients = ()
        config.eval.whole_images = 0  # tests stay fast; a test turns it on
        config.model.features = (8, 16)
        config.fl.rounds = 2
        config.fl.local_steps = 2
        config.style.features = (8, 16)
        config.style.rounds = 1
        config.style.local_steps = 1
        config.style.styles_per_client = 2
        config.fl.batch_size = 2
        config.fl.clients_per_round = 2
        config.checkpoint_every = 1
        config.quiet = True
    return config
