"""Real micrographs on disk: the folder layouts, pairing images with labels, leak-free splits.

Layouts understood (see docs/ARCHITECTURE.md for the array conventions):

    DIR/<client>/images/*  +  DIR/<client>/labels/*     (one sub-folder per lab / client)
    DIR/images             +  DIR/labels                 (a single client named after DIR)

A label file has the same stem as its image and one of the suffixes in ``LABEL_SUFFIXES``. Label files
mark boundaries with 255 (anything > 127 counts); data sets that mark boundaries with 0 are read with
``invert=True``. Everything here is plain numpy so it can run inside a tfds builder without TensorFlow.

Reading a file (orientation, CMYK, palette labels, NaN, FIFOs) is ``data/image_files.py``; label reading
and the label sanity checks are ``data/labels.py``. Their public names are re-exported here, so
``folder`` is the one module a caller of the real-data path needs.
"""

from __future__ import annotations

import glob
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedtransfer_jax.data.image_files import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    NotRegularFileError,
    Pair,
    PathLike,
    check_regular_file,
    read_image,
    upright_shape,
)
from fedtransfer_jax.data.labels import (
    GREY_ERROR_ABOVE,
    GREY_WARN_ABOVE,
    INVERTED_ABOVE,
    PLAUSIBLE_BOUNDARY_FRACTION,
    _LIST_AT_MOST,
    LabelError,
    LabelStats,
    LabelWarning,
    check_client_labels,
    check_labels,
    label_issues,
    label_stats,
    read_label,
    read_label_with_stats,
    size_mismatch_message,
)


# ----------------------------------------------------------------------------------------------
# Folder layout.
# ----------------------------------------------------------------------------------------------


class SkippedFileWarning(UserWarning):
    """A file named like an image that is not read (a FIFO, socket or device)."""


def _files_with_suffix(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Sorted visible regular files in ``folder`` whose suffix (case-insensitive) is in ``suffixes``.

    An entry named like an image that is not a regular file (a FIFO ``x.png``, a socket, a device) is
    skipped with a ``SkippedFileWarning`` naming it: opening a FIFO would block forever.
    """
    named = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in suffixes)
    odd = [p for p in named if p.exists() and not p.is_file() and not p.is_dir()]
    if odd:
        warnings.warn(
            f"{len(odd)} entr{'y' if len(odd) == 1 else 'ies'} of {folder} named like images are not regular "
            f"files (FIFO, socket or device) and are skipped: {', '.join(map(str, odd[:_LIST_AT_MOST]))}",
            SkippedFileWarning,
            stacklevel=3,
        )
    return [p for p in named if p.is_file()]


def discover_clients(data_dir: PathLike) -> dict[str, Path]:
    """Maps client name -> client folder for either supported layout.

    ``DIR/images`` makes DIR itself the single client (named after its basename); otherwise every
    sub-folder holding an ``images/`` folder is a client. Sub-folders without one are ignored so that
    READMEs/licence folders can sit next to the data.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if (data_dir / "images").is_dir():
        return {data_dir.resolve().name: data_dir}
    clients = {p.name: p for p in sorted(data_dir.iterdir()) if p.is_dir() and (p / "images").is_dir()}
    if not clients:
        raise ValueError(
            f"no clients found in {data_dir}: expected {data_dir}/images + {data_dir}/labels, or "
            f"{data_dir}/<client>/images + {data_dir}/<client>/labels"
        )
    return clients


def list_pairs(client_dir: PathLike) -> list[Pair]:
    """Returns the sorted ``(image_path, label_path)`` pairs of one client folder.

    Pairing happens eagerly so that a missing or ambiguous label fails before any long build starts.

    Raises:
      FileNotFoundError: ``images/``/``labels/`` missing, or an image has no label (names both paths).
      ValueError: the client has no images, or two files share a stem.
    """
    client_dir = Path(client_dir)
    image_dir, label_dir = client_dir / "images", client_dir / "labels"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"client folder {client_dir} has no images/ folder ({image_dir})")
    images = _files_with_suffix(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise ValueError(
            f"client folder {client_dir} has no images in {image_dir} (suffixes {IMAGE_SUFFIXES})"
        )
    if not label_dir.is_dir():
        raise FileNotFoundError(f"client folder {client_dir} has no labels/ folder ({label_dir})")
    labels: dict[str, Path] = {}
    for p in _files_with_suffix(label_dir, LABEL_SUFFIXES):
        if p.stem in labels:
            raise ValueError(f"two label files share the stem {p.stem!r}: {labels[p.stem]} and {p}")
        labels[p.stem] = p
    pairs, seen = [], {}
    for img in images:
        if img.stem in seen:
            raise ValueError(f"two image files share the stem {img.stem!r}: {seen[img.stem]} and {img}")
        seen[img.stem] = img
        if img.stem not in labels:
            expected = " or ".join(str(label_dir / (img.stem + s)) for s in LABEL_SUFFIXES)
            other_case = [str(p) for stem, p in labels.items() if stem.casefold() == img.stem.casefold()]
            hint = f" ({other_case[0]} is there: names must match in case)" if other_case else ""
            same_stem = label_dir.glob(glob.escape(img.stem) + ".*")
            lossy = sorted(p.name for p in same_stem if p.suffix.lower() not in LABEL_SUFFIXES)
            if lossy and not hint:  # a label saved as JPEG: its compression smears the lines into grey
                hint = f" ({lossy[0]} is there: labels must be PNG or TIFF, saved losslessly)"
            raise FileNotFoundError(f"no label for image {img}: expected {expected}{hint}")
        pairs.append((img, labels[img.stem]))
    return pairs


def load_pair(
    image_path: PathLike, label_path: PathLike, invert: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Reads one image and its label, checking that they have the same size.

    Raises:
      ValueError: size mismatch (names both files and both sizes) or an unreadable file.
    """
    image, label = read_image(image_path), read_label(label_path, invert=invert)
    if image.shape[:2] != label.shape:
        orientation = upright_shape(image_path)[2]
        raise ValueError(size_mismatch_message(image_path, image.shape[:2], label_path, label.shape, orientation))
    return image, label


# ----------------------------------------------------------------------------------------------
# Leak-free splitting.
# ----------------------------------------------------------------------------------------------


def group_of(path: PathLike, group_regex: str | None = None) -> str:
    """The full-micrograph id of a file: group 1 of ``group_regex`` on the stem, else the whole stem."""
    stem = Path(path).stem
    if not group_regex:
        return stem
    m = re.search(group_regex, stem)
    if m is None:
        raise ValueError(f"group_regex {group_regex!r} does not match the file name {Path(path).name!r}")
    return m.group(1) if m.re.groups else m.group(0)


def split_by_group(
    paths: Sequence[PathLike | Pair],
    test_fraction: float,
    seed: int,
    group_regex: str | None = None,
) -> tuple[list, list]:
    """Splits files into (train, test) by full-image id so crops of one micrograph never leak.

    Items may be paths or ``(image, label)`` pairs (grouped by the image). Groups are shuffled with
    ``np.random.default_rng([seed])``; ``round(test_fraction * n_groups)`` of them go to test, clamped
    so that each side gets at least one group. Input order is kept within each side.

    Raises:
      ValueError: fewer than 2 groups, test_fraction outside (0, 1), or a name the regex misses.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    keys = [group_of(p[0] if isinstance(p, tuple) else p, group_regex) for p in paths]
    groups = sorted(set(keys))
    if len(groups) < 2:
        first = paths[0][0] if paths and isinstance(paths[0], tuple) else (paths[0] if paths else None)
        raise ValueError(
            f"need at least 2 groups to split, found {len(groups)} (group_regex={group_regex!r}, first file {first})"
        )
    n_test = int(np.clip(round(test_fraction * len(groups)), 1, len(groups) - 1))
    order = np.random.default_rng([seed]).permutation(len(groups))
    test_groups = {groups[i] for i in order[:n_test]}
    train = [p for p, k in zip(paths, keys) if k not in test_groups]
    test = [p for p, k in zip(paths, keys) if k in test_groups]
    return train, test


def keep_groups(pairs: Sequence, k: int, seed: int, regex: str | None) -> list:
    """The pairs of `k` of the training micrographs (groups), drawn with the split's seed (a few-label lab:
    `data.train_groups`); the first k of one seeded order, so k + 1 micrographs hold the k of k."""
    keys = [group_of(p[0] if isinstance(p, tuple) else p, regex) for p in pairs]
    groups = sorted(set(keys))
    order = [groups[i] for i in np.random.default_rng([seed, 7]).permutation(len(groups))]
    kept = set(order[:k])
    return [p for p, g in zip(pairs, keys) if g in kept]


def split_pairs(
    pairs: Sequence[Pair],
    *,
    test_fraction: float,
    seed: int,
    group_regex: str | None = None,
    val_fraction: float = 0.0,
    train_groups: int = 0,
    client: str = "",
) -> dict[str, list]:
    """``{'train', 'test'[, 'val']}`` -> pairs of one client folder, split by full-image group: what a run
    trains on, validates on and holds out (the tfds builder stores exactly these splits).

    The test split is made first and exactly as without a val split; ``val_fraction`` of the remaining
    (training) groups then become 'val', so asking for validation tiles never changes the test tiles;
    ``train_groups`` > 0 then keeps that many training micrographs (``keep_groups``).
    """
    regex = group_regex or None
    train, test = split_by_group(pairs, test_fraction, seed, regex)
    out = {"test": test}
    if val_fraction:
        try:
            train, out["val"] = split_by_group(train, val_fraction, seed, regex)
        except ValueError as e:
            raise ValueError(
                f"data.val_fraction={val_fraction}: cannot hold out validation images of client {client!r} "
                f"from its training side ({e}); lower data.test_fraction, add images or set data.val_fraction=0"
            ) from e
    out["train"] = keep_groups(train, train_groups, seed, regex) if train_groups else train
    return out


__all__ = [
    "GREY_ERROR_ABOVE",
    "GREY_WARN_ABOVE",
    "IMAGE_SUFFIXES",
    "INVERTED_ABOVE",
    "LABEL_SUFFIXES",
    "LabelError",
    "LabelStats",
    "LabelWarning",
    "NotRegularFileError",
    "PLAUSIBLE_BOUNDARY_FRACTION",
    "Pair",
    "PathLike",
    "SkippedFileWarning",
    "check_client_labels",
    "check_labels",
    "check_regular_file",
    "discover_clients",
    "group_of",
    "keep_groups",
    "label_issues",
    "label_stats",
    "list_pairs",
    "load_pair",
    "read_image",
    "read_label",
    "read_label_with_stats",
    "size_mismatch_message",
    "split_by_group",
    "split_pairs",
    "upright_shape",
]
