r"""The main study of docs/PROTOCOL.md v2: does sharing styles beat FedAvg + augmentation and both controls?

  python launch.py --config experiments/study_v2.py --workdir runs/study_v2          # 10 seed pairs
  python launch.py --config experiments/study_v2.py:dev --workdir runs/study_v2_dev  # development seeds
  python launch.py --config experiments/study_v2.py:tiny --workdir /tmp/study_tiny   # tests: ~1-3 min

experiments/grains.py:fair over 10 (init seed i, data seed 1000 + i) pairs, i = 0..9: every method with the
same augmentation, budget, cosine schedule and model selection on the validation tiles; the four seen labs
as clients; tint and the four labs outside gen's imaging family (tem_brightfield, ebsd_ipf, polarised_al,
ceramic_sem) as unseen labs. summary.md compares every method with FedAvg and with both controls
(gen_own_style, gen_random_style): paired differences with t-based 95 % CIs and Holm-adjusted p-values
(fedtransfer_jax/runs/sweep.py, metrics/stats.py). Each seed resumes on its own.

Primary endpoint (PROTOCOL v2): post-processed ARI on 4 whole 256 px test images per lab through predict's
sliding-window path (`whole_seen` / `whole_unseen` in summary.json, `whole_*_ari` in the comparisons); the
tile-level metrics are reported beside it.

Cost (2-core CPU, JAX 0.10.2, measured 2026-12-05): 645-660 s of training and evaluation per seed pair when
the machine was otherwise quiet (methods 63-107 s each: AdaIN 107, local and centralized 100, the others
63-71), ~11-12 min wall per seed with data generation; the 10 seed pairs took 2 h 27 min beside other work
(up to 1,130 s per seed under load). `dev` ~35 min; `tiny`: 2 seeds of the tests' tiny job. At 40 rounds
(the budget check's next candidate, docs/PROTOCOL.md) about twice that.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_grains_config", Path(__file__).with_name("grains.py"))
_grains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grains)

METHODS = (
    "local",
    "fedavg",
    "fedtransfer",
    "fedtransfer_fourier",
    "fedtransfer_gen",
    "gen_own_style",
    "gen_random_style",
    "centralized",
)
UNSEEN = ("tint", "tem_brightfield", "ebsd_ipf", "polarised_al", "ceramic_sem")


def get_config(arg: str | None = None):
    variant = arg or "default"
    if variant not in ("default", "dev", "tiny"):
        raise ValueError(f"experiments/study_v2.py: unknown variant {variant!r}; choose default, dev or tiny")
    config = _grains.get_config("tiny" if variant == "tiny" else "fair")
    config.name = "study-v2" if variant == "default" else f"study-v2-{variant}"
    config.methods = METHODS
    config.study_references = ("fedavg", "gen_own_style", "gen_random_style")
    if variant == "default":
        config.seeds = tuple(range(10))
        config.data_seeds = tuple(1000 + i for i in range(10))
        config.data.unseen_clients = UNSEEN
    elif variant == "dev":
        config.seeds = (100, 101, 102)
        config.data_seeds = (1100, 1101, 1102)
        config.data.unseen_clients = UNSEEN
    else:  # tiny: the tests' job, two seed pairs, the fair settings that change code paths
        config.seeds = (0, 1)
        config.data_seeds = (1000, 1001)
        config.data.unseen_clients = ("tem_brightfield",)
        config.data.val_per_client = 2
        config.fl.lr_schedule = "cosine"
        config.eval.select = "best_val"
        config.eval.every_rounds = 1
        config.methods = ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style", "centralized")
    return config
