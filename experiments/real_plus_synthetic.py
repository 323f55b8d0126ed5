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

Cost (2-core CPU, JAX 0.10.2, measured 2026-11-27): the four default methods plus fedtransfer_gen
(`--config.methods="('local','fedavg','fedtransfer_fourier','fedtransfer_gen','centralized')"`) took
1061 s wall, ~3-3.5 min per method; the default four ~14 min. `smoke` (6 rounds) ~3 min; `tiny` (tests)
seconds. fedtransfer (AdaIN) adds its style-network rounds on top of a federated method's cost.
"""

from pathlib import Path

import importlib.util

import ml_collections

# Configs are loaded by file path (ml_collections config_flags), so the sibling is loaded the same way.
_spec = importlib.util.spec_from_file_location("_grains_config", Path(__file__).with_name("grains.py"))
_grains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grains)

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
    # The main job's config (same sections and keys), with the data and budget of this study.
    config = _grains.get_config("default")
    config.name = "real_plus_synthetic" if variant == "default" else f"real_plus_synthetic-{variant}"
    config.methods = ("local", "fedavg", "fedtransfer_fourier", "centralized")

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
    config.data.val_fraction = 0.2  # of the remaining 16: 3 held out to choose the post-processing
    config.data.group_regex = r"_(\d+)-"  # TestDataset_18-256-256.png -> micrograph 18
    # Real lines are ~5 px but grains larger: 3 px gives a similar boundary fraction.
    config.data.boundary_width = 3

    config.fl.rounds = 30
    config.fl.clients_per_round = 0  # all 5 clients every round
    config.fl.local_steps = 8
    config.fl.batch_size = 4
    config.style.rounds = 10
    config.style.local_steps = 6

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
