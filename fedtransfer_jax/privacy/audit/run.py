"""The audit of a finished workdir: regenerate its clients' data, ask every style technique how to attack its
messages, run every attack and collect one report dict.

Thin on purpose: the attack modules take arrays, params and functions (never workdirs), and the checkpoint
layout is still changing. The workdir stores no client data, so the clients' tiles are regenerated from
config.json (synthetic sources only) with the seeds the data builder used (`data.seeds`): the simulation's
privilege, not something a real server has. Style techniques are not named here: each registered method
declares its `StyleAudit` (`style.methods.get_style_audit`), so a new method is audited (or rejected).
"""

from __future__ import annotations

import json
import os
import time
from typing import NamedTuple, Sequence

import jax
import numpy as np

from fedtransfer_jax.data.seeds import lab_seed
from fedtransfer_jax.data import intensity
from fedtransfer_jax.runtime.pixels import decode_uint8, encode_uint8
from fedtransfer_jax.privacy.audit.gradient_inversion import gradient_inversion_audit, tiny_segmenter
from fedtransfer_jax.privacy.audit.property_inference import PROPERTY_TARGETS, property_inference_audit
from fedtransfer_jax.privacy.audit.report import MODEL_DELTA_SENT
from fedtransfer_jax.privacy.audit.statistics_inversion import (
    StatsFn,
    label_guess_inversion_audit,
    style_inversion_audit,
)
from fedtransfer_jax.style import techniques

# Key tags of the attacks on one client's messages (fold_in of the client's audit key): the label-guess
# attack of the j-th such method uses 0x6E + j (the statistics attacks use the method's index, < 0x6E).
_TAG_LABEL_GUESS = 0x6E


class AuditSettings(NamedTuple):
    """How much of each attack to run (the CLI's flags, `python -m fedtransfer_jax.audit --help`)."""

    clients: tuple = ()  # client names to audit (default: all training clients)
    victims: int = 3  # shared images attacked per client (style inversion)
    max_images: int | None = 8  # client images regenerated (victims + baselines)
    style_steps: int = 300
    gi_steps: int = 200
    gi_size: int = 32
    gi_clients: int = 1  # clients attacked by gradient inversion
    gi_batch_sizes: tuple = (1, 4)
    gi_features: tuple = (8, 16)  # U-Net widths of the attacked model
    gi_client_lr: float = 0.1
    noise_multipliers: tuple = (0.1, 1.0)
    pi_tiles: int = 64  # tiles per lab for property inference (0: skip it)
    pi_permutations: int = 200
    pi_alpha: float = 1.0  # ridge penalty in units of the number of (standardised) features


def lab_tiles(data: dict, lab: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` training tiles of a synthetic lab as its client holds them (images, 0/1 labels). Every
    image has its own generator (seed, lab, index), so asking for more images leaves the first ones
    unchanged."""
    from fedtransfer_jax.data.synthetic import LAB_NAMES, make_lab_examples

    if lab not in LAB_NAMES:
        raise ValueError(f"audit CLI: unknown synthetic lab {lab!r}")
    tile = int(data.get("tile_size", data["image_size"]))
    images, labels, _ = make_lab_examples(
        lab,
        n,
        int(data["image_size"]),
        lab_seed(int(data["seed"]), lab, "train"),
        boundary_width=int(data.get("boundary_width", 2)),
    )
    # Each whole image normalised as the run's were (data.intensity), then its tile stored as 8-bit (tfds) and
    # read back as k / 255: the same here, exactly.
    images = intensity.normalise(np.asarray(images, np.float32), data.get("intensity", intensity.RAW))
    return decode_uint8(encode_uint8(images[:, :tile, :tile])), (labels[:, :tile, :tile] > 0).astype(np.uint8)


def _check_synthetic(data: dict) -> None:
    if data.get("source", "synthetic") != "synthetic":
        raise ValueError(
            "audit CLI: only data.source='synthetic' workdirs can be regenerated; call the attack "
            "functions with the folder's arrays instead"
        )


def load_workdir_clients(
    config: dict, max_images: int | None = None, only: Sequence[str] = ()
) -> tuple[dict, list[str]]:
    """Every training client's images and labels, regenerated from the config (the simulation's privilege:
    the workdir does not store client data). Synthetic sources only. Returns ({client: (images, labels)},
    notes)."""
    data = config["data"]
    _check_synthetic(data)
    n = (
        int(data["train_per_client"])
        if max_images is None
        else min(int(data["train_per_client"]), max_images)
    )
    tile = int(data.get("tile_size", data["image_size"]))
    out = {lab: lab_tiles(data, lab, n) for lab in data["clients"] if not only or lab in only}
    notes = [
        f"client images regenerated from config.json (data.seed={data['seed']}, first {n} training images per "
        f"client, top-left {tile}px tile, 8-bit like the tfds cache: bit-identical to the clients' training tiles "
        "when image_size == tile_size): the workdir stores no client data; this is the simulation's privilege, "
        "not something a real server has."
    ]
    return out, notes


def style_audits(config: dict, image_size: int) -> dict[str, techniques.StyleAudit]:
    """{method: StyleAudit} of every registered style technique, configured as the workdir's clients were
    (config.style, the run's seed); raises for a registered method that declares none."""
    return {
        name: techniques.get_style_audit(
            name, config.get("style", {}), seed=int(config["seed"]), image_size=image_size
        )
        for name in techniques.TECHNIQUE_NAMES
    }


def audit_notes(audits: dict[str, techniques.StyleAudit]) -> list[str]:
    """Every method's notes on its settings, then every method's caveats."""
    return [n for a in audits.values() for n in a.notes] + [c for a in audits.values() for c in a.caveats]


def style_stats_fns(config: dict, image_size: int) -> tuple[dict[str, StatsFn], list[str]]:
    """{method: statistics} of the methods whose message is a function of the image alone (AdaIN feature
    statistics from the frozen random encoder re-initialised as training does, Fourier amplitudes), and
    the methods' notes."""
    audits = style_audits(config, image_size)
    return {n: a.statistics for n, a in audits.items() if a.context is None}, audit_notes(audits)


def shared_indices(num_images: int, k: int, seed: int, client_id: int) -> np.ndarray:
    """Which of a client's images it shared style statistics of (the trainer's style.federated.style_sample)."""
    from fedtransfer_jax.style.federated import style_sample

    return style_sample(np.ones(num_images, bool), k, seed, client_id)


def run_workdir_audit(workdir: str, settings: AuditSettings) -> dict:
    """Every attack on the clients of the finished run in `workdir` (reads config.json): the report dict
    that `report.write_report` writes."""
    t0 = time.time()
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    seed = int(config.get("seed", 0))
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0xA0D17)
    clients, notes = load_workdir_clients(config, settings.max_images, settings.clients)
    names = list(clients)
    ids = {name: i for i, name in enumerate(config["data"]["clients"])}  # global client ids (style_sample)
    report: dict = {
        "workdir": os.path.abspath(workdir),
        "config_name": config.get("name", ""),
        "notes": notes,
    }
    report["settings"] = settings._asdict()

    size = next(iter(clients.values()))[0].shape[1]
    audits = style_audits(config, size)
    report["what_is_sent"] = {k: v for a in audits.values() for k, v in a.what_is_sent.items()}
    report["what_is_sent"].update(MODEL_DELTA_SENT)
    notes += audit_notes(audits)
    k_shared = int(config.get("style", {}).get("styles_per_client", 8))

    def victims_of(name: str, images: np.ndarray) -> np.ndarray:
        return shared_indices(len(images), k_shared, seed, ids[name])[: settings.victims]

    # (a) Messages that are functions of the image alone: one attack per method and client.
    by_image = {n: a for n, a in audits.items() if a.context is None}
    report["style_inversion"] = {}
    for name in names:
        images, labels = clients[name]
        report["style_inversion"][name], _ = style_inversion_audit(
            images,
            labels,
            {n: a.statistics for n, a in by_image.items()},
            victims_of(name, images),
            jax.random.fold_in(key, ids[name]),
            steps=settings.style_steps,
            score_kwargs={n: a.score_kwargs or {} for n, a in by_image.items()},
        )

    # (a) Messages fitted with the tile's label map: attacked with a guessed label, one section per method.
    for j, (method, a) in enumerate((n, a) for n, a in audits.items() if a.context is not None):
        report[f"{method}_inversion"] = {}
        if a.check is not None:
            report[a.check.report_key] = {}
        for name in names:
            images, labels = clients[name]
            victims = victims_of(name, images)
            method_key = jax.random.fold_in(jax.random.fold_in(key, ids[name]), _TAG_LABEL_GUESS + j)
            report[f"{method}_inversion"][name], _ = label_guess_inversion_audit(
                images,
                labels,
                victims,
                method_key,
                name=method,
                message_fn=a.message,
                stats_fn=a.statistics,
                context_fn=a.context,
                target_fn=a.target,
                steps=settings.style_steps,
                score_kwargs=a.score_kwargs,
            )
            if a.check is not None:
                first = victims[0]
                report[a.check.report_key][name] = a.check.run(images[first], labels[first], method_key)
        if a.check is not None:
            notes += a.check.notes(report[a.check.report_key])

    # (c) Property inference from every method's message.
    if settings.pi_tiles > 0:
        data = config["data"]
        n_train = int(data["train_per_client"])
        n_pi = max(int(settings.pi_tiles), n_train)
        fns_by_tile = {n: a.message for n, a in audits.items()}
        report["property_inference"] = {}
        for name in names:
            images, labels = lab_tiles(data, name, n_pi)
            report["property_inference"][name] = property_inference_audit(
                images,
                labels,
                fns_by_tile,
                alpha=settings.pi_alpha,
                permutations=settings.pi_permutations,
                seed=seed,
            )
        tests = len(names) * len(fns_by_tile) * len(PROPERTY_TARGETS)
        notes.append(
            f"property inference: the first {n_pi} training tiles of each lab, i.e. the {n_train} its "
            f"client holds (of which it shares the styles of {min(k_shared, n_train)}) plus {n_pi - n_train} "
            "more from the same generator and per-image seeds, because a handful of tiles cannot carry a "
            "leave-one-out regression with a permutation test; each tile's message is what its client would "
            f"send for it (gen: fitted with the tile's own label). Ridge penalty {settings.pi_alpha:g} x the "
            f"number of features, {settings.pi_permutations} shuffles. {tests} tests at p < 0.05: about "
            f"{0.05 * tests:.1f} false 'leaks' are expected by chance even if nothing leaks; a target that "
            "leaks in several labs, with small p, is the stronger evidence."
        )

    # (b) Gradient inversion of a model delta.
    gi_size = settings.gi_size
    _, params, loss_fn = tiny_segmenter(gi_size, seed, settings.gi_features)
    report["gradient_inversion"] = {}
    for name in names[: settings.gi_clients]:
        images, labels = clients[name]
        if images.shape[1] < gi_size:
            raise ValueError(f"--gi_size {gi_size} is larger than the images ({images.shape[1]} px)")
        batch_sizes = [b for b in settings.gi_batch_sizes if b < len(images)]  # the rest are the baseline
        if len(batch_sizes) < len(settings.gi_batch_sizes):
            notes.append(f"{name}: {len(images)} images; batch sizes >= that skipped (the baseline needs the rest)")
        report["gradient_inversion"][name], _ = gradient_inversion_audit(
            loss_fn,
            params,
            images[:, :gi_size, :gi_size],
            labels[:, :gi_size, :gi_size],
            jax.random.fold_in(key, 100 + ids[name]),
            batch_sizes=batch_sizes,
            noise_multipliers=settings.noise_multipliers,
            client_lr=settings.gi_client_lr,
            steps=settings.gi_steps,
        )
    notes.append(
        f"gradient inversion: a U-Net {tuple(settings.gi_features)} at its initial params on {gi_size}px crops, one full-batch SGD step "
        f"at lr {settings.gi_client_lr} (FedSGD-like, the most revealing update; the workdir's model and optimiser are "
        "not used), labels known to the attacker. 'control' inverts pure noise: what the labels and the prior "
        "alone give. DP clip norm = the delta's own norm (clipping inactive)."
    )
    report["seconds"] = time.time() - t0
    return report
