r"""One real lab (tint-etched micrographs) federated with synthetic labs: does federation help it?

  python launch.py --config experiments/real_plus_synthetic.py --config.data.dir=../shared/data/tbm_tint_etched
  python launch.py --config experiments/real_plus_synthetic.py:smoke --workdir /tmp/rps-smoke

The question: does federated training beat the real client's local-only model on the real client's own
test split (boundary F1 and ARI, `summary.json` -> methods.<m>.per_client.tbm_tint_etched)? The real
client holds the 80 TBM tint-etched 256x256 crops (data source 'mixed': `data.dir` holds the real client
folder, the synthetic labs come from data/synthetic.py), split by full-micrograph id (`group_regex`) so
that crops of one micrograph never straddle train and test (16 micrographs train, 5 test).

Choices:
- Tile 128 (not 64): real grains are ~50-100 px across, so a 64 px tile often holds one or two grains
  and almost no complete boundary network, which makes per-tile ARI meaningless; a 128 px tile holds
  several grains and each crop still gives 4 tiles. Synthetic labs render 128 px images (one tile each).
- Methods: local (the baseline the question is about), fedavg (plain federation), fedtransfer_fourier
  (style sharing via Fourier amplitudes: the tint-etch colours are exactly the low-frequency amplitude
  that it transfers, and it costs no style-network training) and centralized (pooled upper bound, no
  privacy). fedtransfer (AdaIN) is left out of the default to fit the budget: its style network costs
  extra federated rounds at 128 px; add it with `--config.methods=...` when time allows.
- `data.dir` defaults to ../shared/data/tbm_tint_etched next to the repo (resolved from this file), so
  the command above and a bare `--config experiments/real_plus_synthetic.py` read the same folder.

Cost (2-core CPU, JAX 0.10.2; measured with 2 and 6 rounds at local_steps 6 on a shared, heavily loaded
machine and extrapolated by CPU time): fixed ~90 CPU-s (start-up, tfds build of the 80 crops + 4 x 32
synthetic images, one compilation per method, evaluation, figures) plus ~28 CPU-s per round for all four
methods at local_steps 8 -> ~930 CPU-s, i.e. ~8-12 min wall on an idle 2-core CPU (the default: 30
rounds). `smoke` (6 rounds) ~3 min; `tiny` (tests) seconds. Adding fedtransfer (AdaIN) roughly adds
its own style-network rounds on top of another federated method's cost.
"""

from pathlib import Path

import ml_collections

REAL_CLIENT = "tbm_tint_etched"
SYNTHETIC_LABS = ("brightfield", "darkfield", "sem", "tint")
DEFAULT_DIR = str((Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / REAL_CLIENT).resolve())


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "smoke", "tiny"):
        raise ValueError(
            f"experiments/real_plus_synthetic.py: unknown variant {variant!r}; "
            "choose default, smoke or tiny"
        )
    config = ml_collections.ConfigDict()
    config.name = "real_plus_synthetic" if variant == "default" else f"real_plus_synthetic-{variant}"
    config.seed = 0
    config.methods = ("local", "fedavg", "fedtransfer_fourier", "centralized")
    config.distributed = False
    config.checkpoint_every = 5
    config.quiet = False

    # --- data --------------------------------------------------------------------------------------------
    config.data = ml_collections.ConfigDict()
    config.data.source = "mixed"  # real client folders under `dir` + synthetic labs
    config.data.dir = DEFAULT_DIR  # holds images/ + labels/: one client named after the folder
    config.data.clients = (REAL_CLIENT,) + SYNTHETIC_LABS
    config.data.unseen_clients = ()
    config.data.image_size = 128  # synthetic images: one tile each
    config.data.tile_size = 128
    config.data.tile_overlap = 0  # 256 = 2 x 128: 4 disjoint tiles per real crop
    config.data.train_per_client = 24  # synthetic images per lab (train)
    config.data.test_per_client = 8
    config.data.test_fraction = 0.25  # of the 21 full micrographs: 5 held out
    config.data.group_regex = r"_(\d+)-"  # TestDataset_18-256-256.png -> micrograph 18
    config.data.invert_labels = False
    config.data.pixel_size_um = 0.0
    config.data.seed = 0
    config.data.boundary_width = (
        3  # real lines are ~5 px but grains larger: 3 px gives a similar boundary fraction
    )
    config.data.tfds_dir = ""

    # --- model -------------------------------------------------------------------------------------------
    config.model = ml_collections.ConfigDict()
    config.model.name = "unet"
    config.model.features = (16, 32, 64)
    config.model.groups = 8
    config.model.conv_impl = ""
    config.model.dtype = "float32"
    config.model.remat = False

    config.loss = ml_collections.ConfigDict()
    config.loss.boundary_weight = 3.0
    config.loss.dice_weight = 1.0

    # --- federated optimisation ----------------------------------------------------------------------------
    config.fl = ml_collections.ConfigDict()
    config.fl.rounds = 30
    config.fl.clients_per_round = 0  # all 5 clients every round
    config.fl.local_steps = 8
    config.fl.batch_size = 4
    config.fl.client_optimizer = "adam"
    config.fl.client_lr = 2e-3
    config.fl.client_momentum = 0.0
    config.fl.clip_norm = 0.0
    config.fl.server_optimizer = "sgd"
    config.fl.server_lr = 1.0
    config.fl.server_momentum = 0.0
    config.fl.prox_mu = 0.01
    config.fl.strategy = "vmap"
    config.fl.chunk_size = 0
    config.fl.unroll_local_steps = False
    config.fl.shard_clients = True

    # --- FedTransfer style sharing ---------------------------------------------------------------------------
    config.style = ml_collections.ConfigDict()
    config.style.features = (16, 32, 64)
    config.style.train_encoder = False
    config.style.rounds = 10
    config.style.local_steps = 6
    config.style.lr = 2e-3
    config.style.content_weight = 1.0
    config.style.style_weight = 1.0
    config.style.identity_weight = 1.0
    config.style.alpha = 1.0
    config.style.styles_per_client = 8
    config.style.mix_prob = 0.5
    config.style.restyle = "online"
    config.style.precomputed_copies = 2
    config.style.fourier_beta = 0.1
    config.style.fourier_lam = (0.5, 1.0)

    # --- evaluation ----------------------------------------------------------------------------------------
    config.eval = ml_collections.ConfigDict()
    config.eval.threshold = 0.5
    config.eval.tolerance = 2.0

    if variant == "smoke":
        config.fl.rounds = 6
        config.fl.local_steps = 6
        config.data.train_per_client = 12
        config.data.test_per_client = 4
    elif variant == "tiny":  # for tests: seconds, not minutes (real crops cut into 64 px tiles)
        config.data.clients = (REAL_CLIENT, "brightfield")
        config.data.image_size = 64
        config.data.tile_size = 64
        config.data.train_per_client = 2
        config.data.test_per_client = 1
        config.data.boundary_width = 2
        config.model.features = (8, 16)
        config.fl.rounds = 1
        config.fl.local_steps = 1
        config.fl.batch_size = 2
        config.style.features = (8, 16)
        config.style.rounds = 1
        config.style.local_steps = 1
        config.style.styles_per_client = 2
        config.checkpoint_every = 1
        config.quiet = True
    return config
