r"""Privacy/utility of DP-FedAvg on the main job's data: ARI against epsilon for several noise multipliers.

  python launch.py --config experiments/privacy.py --workdir runs/privacy

summary.md gets the privacy/utility table (z, clip, epsilon, seen-lab ARI, % of FedAvg's) and the workdir
`ari_vs_epsilon.png`.

The main experiment's labs and protocol (experiments/grains.py, docs/PROTOCOL.md: 4 labs with 8 labelled
tiles, the unseen lab), FedAvg without DP, the local baseline (what a lab gets without sharing anything),
and DP-FedAvg (McMahan et al. 2018; privacy/dp.py) with adaptive clipping (Andrew et al. 2021) at noise
multipliers z in NOISE: user-level epsilon at delta = 1e-5 after the 20 rounds, with all 4 labs in every
round (no sampling amplification). One client is one lab, so the noise on the mean update has std
z * C / 4 per coordinate: with four labs, user-level DP is the hard regime (McMahan et al. used thousands
of users per round); the curve says what it costs here.

Cost: 7 methods of the default job's size: 873 s measured on the 2-core CPU while other jobs ran
(2026-11-27), ~8 min on an idle one.

Example-level DP for the cross-silo case (a handful of labs, many micrographs each):

  python launch.py --config experiments/privacy.py:dpsgd --workdir runs/privacy_dpsgd --cpu_devices=auto

DP-SGD inside every lab (privacy/dpsgd.py; Abadi et al. 2016): each local step Poisson-samples the lab's
micrographs at rate q = B / U, clips each micrograph's gradient to C, adds N(0, (z C)^2) to the sum and
divides by B; epsilon per micrograph over all 20 x 10 local steps (engine.example_privacy_accounting,
delta 1e-5). The unit is a micrograph (here one 64 px image), so each lab needs many of them: the variant
gives every lab DPSGD_MICROGRAPHS labelled micrographs instead of the main job's 8 (at U = 8 no z gives a
useful epsilon: q = B / 8 composed 200 times), and runs beside it, on the same data and budget, FedAvg,
local and user-level DP-FedAvg. Cosine schedule, the last round's model scored (no validation-based
choice, so validation scores never influence a private model). Cost measured on the 2-core CPU
(2026-12-05): ~1 h in all; local, FedAvg and each DP-FedAvg ~105 s, each DP-SGD method 15 min alone (23 min
beside the test suite): a DP-SGD step computes up to 2B = 64 micrograph gradients instead of a batch of 8.
Results: README "Results", docs/results/privacy_dpsgd/.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_grains_config", Path(__file__).with_name("grains.py"))
_grains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grains)

NOISE = (0.5, 1.0, 2.0, 3.0, 5.0)
# Example-level DP-SGD (the `dpsgd` variants): noise multipliers, micrographs per lab, expected micrographs
# per step (B) and per-micrograph clip norm.
DPSGD_NOISE = (1.0, 1.5, 3.0)
DPSGD_USER_NOISE = (1.0, 5.0)  # user-level DP-FedAvg on the same data, for the comparison
DPSGD_MICROGRAPHS = 256
DPSGD_BATCH = 32
DPSGD_CLIP = 1.0


def _name(prefix: str, z: float) -> str:
    return f"{prefix}_z{z:g}".replace(".", "p")


def get_config(arg: str | None = None):
    variant = arg or "default"
    if variant in ("dpsgd", "dpsgd_tiny"):
        return _dpsgd_config(tiny=variant == "dpsgd_tiny")
    config = _grains.get_config(arg)
    config.name = config.name.replace("grains", "privacy", 1)
    names = []
    for z in NOISE:
        name = _name("dp", z)
        config.method_specs[name] = _grains.method("fedavg", aggregator=_grains.dp(z))
        names.append(name)
    config.methods = ("local", "fedavg", *names)
    return config


def _dpsgd_config(*, tiny: bool):
    config = _grains.get_config("tiny" if tiny else "fair")
    config.name = "privacy-dpsgd-tiny" if tiny else "privacy-dpsgd"
    config.eval.select = "last"
    config.study_references = ("fedavg",)
    micrographs, batch, noise, user_noise = DPSGD_MICROGRAPHS, DPSGD_BATCH, DPSGD_NOISE, DPSGD_USER_NOISE
    if tiny:
        micrographs, batch, noise, user_noise = 8, 2, (1.0,), (1.0,)
        config.fl.lr_schedule = "cosine"
    config.data.train_per_client = micrographs
    names = []
    for z in user_noise:
        config.method_specs[_name("dp", z)] = _grains.method("fedavg", aggregator=_grains.dp(z))
        names.append(_name("dp", z))
    for z in noise:
        spec = _grains.dpsgd(z, batch, DPSGD_CLIP, max_units_per_step=2 * batch)
        config.method_specs[_name("dpsgd", z)] = _grains.method("fedavg", dpsgd=spec)
        names.append(_name("dpsgd", z))
    config.methods = ("local", "fedavg", *names)
    return config
