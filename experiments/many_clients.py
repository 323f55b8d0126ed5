r"""Federations of thousands: a many-client study where differential privacy protects something.

  python launch.py --config experiments/many_clients.py:tiny --workdir /tmp/mc_tiny   # seconds (tests)
  python launch.py --config experiments/many_clients.py --workdir runs/many_clients   # 2-core CPU
  python launch.py --config experiments/many_clients.py:gpu --workdir runs/many_clients_gpu  # one GPU
  python launch.py --config experiments/many_clients.py:cpu_large --workdir runs/mc_large --cpu_devices=auto

A population of N simulated clients (data/population.py: one per microscope or operator, each drawn from a
continuous prior over the built-in imaging styles' parameter ranges and over grain sizes, holding 2-4 small
labelled tiles rendered on demand). Each round the host samples K of N clients (seed, round), renders only
their tiles and runs the one-jit round on them (runs/population_training.py), so a round costs O(K), not
O(N). Cells: every (N, K, z, seed) of `grid`; z = 0 is FedAvg, z > 0 DP-FedAvg (privacy/dp.py: clip, Gaussian
noise of std z C on the sum, fixed denominator K, adaptive clipping) with user-level epsilon from the RDP
accountant at delta = 1/(10 N), three ways: K of N without replacement with replace-one neighbours (the
engine's accounting, conservative: z/2), Poisson sampling at q = K/N (the usual reference), and without
sampling amplification (against the server, which knows the sample). With K in the hundreds the
noise on the mean, z C / K, is small enough to train: the regime where user-level DP protects someone.

Endpoints (summary.md / summary.json `tables`): ARI of the final model on tiles of 'heldout' population
clients (ids >= 10^8: never sampled, same prior) and of the 'unseen_lab' (tint: a style outside the prior),
thresholded at eval.threshold and after the built-in post-processing defaults (no post-processing choice:
the population shares no validation set); ARI vs K and ARI vs epsilon. Resume: a finished cell
(`<workdir>/cells/<cell>.json`) is never rerun; a killed cell restarts from round 0.

Cost (2-core CPU shared with other jobs, JAX CPU, one XLA:CPU device per core, 2026-12-05): `tiny` ~75 s
wall (2 cells of 2 rounds; imports and compilation). Default grid (N in 1000, 10000; K in 10, 30, 100; z in
0, 0.5, 1; 10 rounds; seed 0; 18 cells): the 12 cells with K <= 30 took 13.3 min on a busy machine (a cell
of K = 10: 9-124 s, of K = 30: 26-86 s; the first compilation of each round ~35-45 s, later ones from the
persistent compilation cache ~5 s), the 6 cells with K = 100 ~1-2 min each. A round of K clients costs ~0.03 s
per client (4 local steps of batch 2, 32 px, U-Net 8/16) plus ~0.035 s per client of tile rendering on the
prefetch thread, the same at N = 1000 and N = 100,000 (benchmarks/population_rounds.py).

`cpu_large` (the default cell at N = 100,000; K in 10, 30, 100, 300, 1000; z in 0, 1, 2; seeds 0, 1: 30
cells): 41 min measured on the 2-core CPU (2026-12-05, beside other jobs; the K = 1000 cells 24 min of it,
~3.5-5 min each); the process peaked at 1.24 GB resident. Results: docs/many_clients_cpu.md.

`gpu` (N = 100,000; K in 100, 300, 1000; z in 0, 0.5, 1, 2; 40 rounds; 64 px; U-Net 16/32/64; 8 local
steps; 3 seeds: 36 cells), NOT RUN, an estimate: host rendering dominates. 64 px tiles render at ~8-20
clients/s per core (measured on this CPU), so with `population.render_workers = 14` a K = 1000 round needs
~4-9 s of rendering (prefetched, overlapping the GPU round, expected < 1 s at K = 1000); 40 rounds x
(100 + 300 + 1000) clients x 4 z x 3 seeds = 672,000 client renders ~ 50-90 min, plus ~36 compilations
(~0.5-1 min each) and evaluation: ~1.5-2.5 h on one H100 host with 16 cores. Population memory: 131 bytes
a client, 13.1 MB for 100,000 (built in 4-17 s).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny", "gpu", "cpu_large"):
        raise ValueError(
            f"experiments/many_clients.py: unknown variant {variant!r}; choose default, tiny, gpu or cpu_large"
        )
    config = ml_collections.ConfigDict()
    config.name = "many_clients" if variant == "default" else f"many_clients-{variant}"
    config.runner = "population"  # launch.py: runs/population_training.py instead of runs/train.py
    config.seed = 0  # unused by the grid (grid.seeds), kept for the engine's helpers
    config.quiet = False
    config.prefetch = True  # render round r+1's tiles on a host thread while round r runs

    config.population = ml_collections.ConfigDict()
    config.population.seed = 0  # the population's clients and tiles
    config.population.tile_size = 32
    config.population.tiles_per_client = (2, 4)
    config.population.diameter_px = (5.0, 20.0)  # log-uniform prior of a client's smallest grain size
    config.population.render_workers = 0  # > 0: render a round's clients in that many spawned processes

    config.grid = ml_collections.ConfigDict()
    config.grid.num_clients = (1000, 10000)
    config.grid.clients_per_round = (10, 30, 100)
    config.grid.noise_multipliers = (0.0, 0.5, 1.0)  # 0 = FedAvg without DP
    config.grid.seeds = (0,)

    config.model = ml_collections.ConfigDict()
    config.model.name = "unet"
    config.model.features = (8, 16)
    config.model.groups = 4
    config.model.conv_impl = ""
    config.model.dtype = "float32"
    config.model.remat = False

    config.loss = ml_collections.ConfigDict()
    config.loss.boundary_weight = 3.0
    config.loss.dice_weight = 1.0

    config.fl = ml_collections.ConfigDict()
    config.fl.algorithm = "fedavg"  # stateless per client only (fedavg, fedavgm, fedadam, fedyogi)
    config.fl.rounds = 10
    config.fl.local_steps = 4
    config.fl.batch_size = 2
    config.fl.client_optimizer = "adam"
    config.fl.client_lr = 2e-3
    config.fl.client_momentum = 0.0
    config.fl.clip_norm = 0.0
    config.fl.dropout_rate = 0.0
    config.fl.strategy = "auto"  # sequential on the CPU; the largest chunk that fits on a GPU
    config.fl.chunk_size = 0
    config.fl.unroll_local_steps = False
    config.fl.shard_clients = True  # one XLA:CPU device per core: the K clients split over them

    # DP-FedAvg (privacy/dp.py) for z > 0; epsilon by engine.privacy_accounting.
    config.dp = ml_collections.ConfigDict()
    # Initial clip norm (adaptive). 0 = auto: Adam's bound on an update, client_lr x local_steps x sqrt(params)
    # (runs/population_training.initial_clip_norm); 0.1 reproduces docs/many_clients_cpu.md's first grid.
    config.dp.clip_norm = 0.0
    config.dp.adaptive = True
    config.dp.target_quantile = 0.5
    config.dp.clip_lr = 0.2
    config.dp.clipped_count_stddev = 0.0  # 0 = max(0.05 K, z)
    config.dp.delta = 0.0  # 0 = 1 / (10 N)
    config.dp.accountant = "rdp"

    config.eval = ml_collections.ConfigDict()
    config.eval.threshold = 0.5
    config.eval.tolerance = 2.0
    config.eval.heldout_clients = 16  # population clients never sampled (2-4 tiles each)
    config.eval.unseen_lab = "tint"
    config.eval.unseen_tiles = 32

    if variant == "tiny":  # for tests: seconds of training, most of it compilation
        config.quiet = True
        config.population.tile_size = 16
        config.population.diameter_px = (3.0, 6.0)
        config.population.tiles_per_client = (2, 3)
        config.grid.num_clients = (1000,)
        config.grid.clients_per_round = (4,)
        config.grid.noise_multipliers = (0.0, 1.0)
        config.model.features = (4, 8)
        config.model.groups = 2
        config.fl.rounds = 2
        config.fl.local_steps = 1
        config.eval.heldout_clients = 2
        config.eval.unseen_tiles = 2
    elif variant == "cpu_large":  # the default cell shape at N = 100,000 and K up to 1,000 on the CPU
        config.grid.num_clients = (100_000,)
        config.grid.clients_per_round = (10, 30, 100, 300, 1000)
        config.grid.noise_multipliers = (0.0, 1.0, 2.0)
        config.grid.seeds = (0, 1)
    elif variant == "gpu":
        config.population.tile_size = 64
        config.population.diameter_px = (8.0, 30.0)
        config.grid.num_clients = (100_000,)
        config.grid.clients_per_round = (100, 300, 1000)
        config.grid.noise_multipliers = (0.0, 0.5, 1.0, 2.0)
        config.grid.seeds = (0, 1, 2)
        config.model.features = (16, 32, 64)
        config.model.groups = 8
        config.fl.rounds = 40
        config.fl.local_steps = 8
        config.population.render_workers = 14  # host rendering is the bottleneck at K = 1000
        config.eval.heldout_clients = 64
        config.eval.unseen_tiles = 64
    return config
