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
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_grains_config", Path(__file__).with_name("grains.py"))
_grains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_grains)

NOISE = (0.5, 1.0, 2.0, 3.0, 5.0)


def get_config(arg: str | None = None):
    config = _grains.get_config(arg)
    config.name = config.name.replace("grains", "privacy", 1)
    names = []
    for z in NOISE:
        name = f"dp_z{z:g}".replace(".", "p")
        config.method_specs[name] = _grains.method("fedavg", aggregator=_grains.dp(z))
        names.append(name)
    config.methods = ("local", "fedavg", *names)
    return config
