"""Style checks of several style techniques on one data set, end to end: the library behind
``scripts/style_checks.py`` (and what the trainer can call to put the checks in summary.json).

    train, heldout = synthetic_labs(labs, n_train=8, n_heldout=96, size=64, seed=100)   # dev seeds only
    report = check_methods(["adain", "fourier", "gen"], cfg, train, heldout, targets, seed=100, out_dir=...)

For every method: federated training of its shared model on the clients' training tiles (each client its
own data; FedAvg), every client's style message on ``styles_per_client`` of its tiles, the bank, then
``checks.restyle_all`` / ``checks.evaluate`` on the held-out tiles and a style grid PNG. The identity
restyler ``none`` (tiles left in their own style) is always reported as the reference: a method must beat
it on fidelity and should not lose much more structure than it.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

from fedtransfer_jax.style import checks, federated
from fedtransfer_jax.style.techniques import get_technique

LabData = Mapping[str, tuple[np.ndarray, np.ndarray]]


def synthetic_labs(
    labs: Sequence[str], *, n_train: int, n_heldout: int, size: int, seed: int
) -> tuple[dict, dict]:
    """Embedded synthetic labs: per lab, tiles ``0..n_train-1`` are the client's labelled training tiles and
    the next ``n_heldout`` the held-out check tiles (images quantised to 8 bit as the trainer stores them)."""
    from fedtransfer_jax.data.synthetic import make_lab_examples

    train, heldout = {}, {}
    for lab in labs:
        x, y, _ = make_lab_examples(lab, n_train + n_heldout, size=size, seed=seed)
        x = (np.round(np.clip(x, 0, 1) * 255.0) / 255.0).astype(np.float32)
        train[lab], heldout[lab] = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    return train, heldout


def _summary_line(name: str, rep: dict) -> str:
    fid = rep["fidelity"]
    cells = " ".join(f"{k}={v['ratio']:.2f}" for k, v in fid.items())
    line = f"{name:<10} fidelity ratio {cells}"
    if "structure" in rep:
        s = rep["structure"]
        line += f" | F1 {s['f1_original']:.3f}->{s['f1_restyled']:.3f} ARI {s['ari_original']:.3f}->{s['ari_restyled']:.3f}"
    if "classifier" in rep:
        line += f" | ->target {rep['classifier']['target_fraction_mean']:.2f}"
    pol = [f"{k}={v['agreement']:.2f}" for k, v in rep["polarity"].items() if v["agreement"] is not None]
    return line + " | polarity " + " ".join(pol)


def check_methods(
    methods: Sequence[str],
    cfg: Mapping[str, Any],
    train: LabData,
    heldout: LabData,
    targets: Sequence[str],
    *,
    seed: int,
    rounds: int = 15,
    local_steps: int = 8,
    batch_size: int = 8,
    lr: float = 2e-3,
    styles_per_client: int = 8,
    per_pair: int = 16,
    classifier_steps: int = 400,
    segmenter_steps: int = 600,
    out_dir: str | None = None,
    log=print,
) -> dict:
    """Run every check for every method (see the module docstring). ``targets``: the clients (labs with
    training tiles), in bank order; other labs in ``heldout`` serve only as 'other labs' of the fidelity
    ratio. Returns a JSON-able report; writes ``style_grid_<method>.png`` into ``out_dir`` if given."""
    t0 = time.time()
    ctx = checks.prepare(
        heldout, targets, seed, classifier_steps=classifier_steps, segmenter_steps=segmenter_steps
    )
    report: dict[str, Any] = {
        "seed": seed,
        "targets": list(targets),
        "labs": list(heldout),
        "checks": ctx.config,
        "measure": checks.validate_measure(ctx),
        "real_polarity": ctx.polarity,
        "prepare_seconds": time.time() - t0,
        "methods": {},
    }
    log(f"checks prepared in {report['prepare_seconds']:.0f}s")
    clients = [
        {
            "images": np.asarray(train[c][0], np.float32),
            "labels": np.asarray(train[c][1]),
            "mask": np.ones(len(train[c][0]), bool),
        }
        for c in targets
    ]
    restylers = {"none": lambda x, y, t, k: np.asarray(x)}
    infos: dict[str, dict] = {"none": {}}
    for name in methods:
        method = get_technique(name, cfg)
        t1 = time.time()
        tr = federated.train_shared(
            method,
            clients,
            seed=seed,
            tile=clients[0]["images"].shape[1],
            rounds=rounds,
            local_steps=local_steps,
            batch_size=batch_size,
            lr=lr,
        )
        t2 = time.time()
        bank, messages = federated.share_styles(method, tr.params, clients, k=styles_per_client, seed=seed)
        floats = sum(int(np.prod(v.shape[1:])) for k, v in messages[0].items() if k != "valid")
        infos[name] = {
            "info": dict(method.info or {}),
            "shared_training_seconds": tr.seconds,
            "shared_training_losses": tr.losses,
            "message_seconds": time.time() - t2,
            "setup_seconds": time.time() - t1,
            "floats_per_style": floats,
        }
        restylers[name] = checks.method_restyler(method, tr.params, bank, targets)
    for name, restyle in restylers.items():
        t1 = time.time()
        rep = checks.evaluate(ctx, checks.restyle_all(ctx, restyle, seed, per_pair=per_pair))
        rep.update(infos[name])
        rep["check_seconds"] = time.time() - t1
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            checks.style_grid_figure(
                os.path.join(out_dir, f"style_grid_{name}.png"),
                ctx,
                restyle,
                seed,
                title=f"{name}: rows = source tile, columns = target style; bottom rows = real tiles (seed {seed})",
            )
        report["methods"][name] = rep
        log(_summary_line(name, rep))
    return report


__all__ = ["synthetic_labs", "check_methods"]
