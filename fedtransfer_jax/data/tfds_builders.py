"""tensorflow-datasets builder for grain micrographs (synthetic labs or real folders).

Why tfds: the tiles are generated/decoded once into array_record files and then read with
``builder.as_data_source(split)`` -- random access from numpy, no TensorFlow needed. Every builder
config's name embeds a hash of its parameters (and, for folders, of the file listing), so changing any
parameter builds a fresh cache instead of silently reusing a stale one.

Splits are ``<client>_train``, ``<client>_test`` and, when asked for, ``<client>_val`` (validation tiles for
choosing post-processing: ``val_per_client`` extra synthetic images per lab, or ``val_fraction`` of the
training full images of a folder client, split by group) with client names sanitised to ``[a-z0-9_]``.
A validation split never changes the train/test tiles: synthetic splits are seeded by (lab, split name),
and a folder's val images come out of its training side after the test split is made.

Folder clients' labels are checked before anything is built (``folder.check_client_labels``: errors stop
the build, warnings are emitted as ``folder.LabelWarning``).
Features: ``image`` uint8 [tile, tile, 3], ``label`` uint8 [tile, tile] (1 = boundary), ``source``
(file name, or ``synthetic/<lab>/<i>``), ``position`` int32 (y, x) of the tile in its source image,
and ``index`` (the example's order in its split, since tfds shuffles records on write).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from fedtransfer_jax.data import folder as folder_lib
from fedtransfer_jax.data import intensity
from fedtransfer_jax.data import tiling
from fedtransfer_jax.data.seeds import lab_seed
from fedtransfer_jax.runtime.pixels import encode_uint8

_HASH_LEN = 12
INVERT_FLAG = "--config.data.invert_labels"  # How a trainer user flips label polarity (named in errors).


def sanitize_client_name(name: str) -> str:
    """Lower-cases and maps anything outside ``[a-z0-9_]`` to '_' (tfds split names are restricted)."""
    out = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", name.lower())).strip("_")
    if not out:
        raise ValueError(f"client name {name!r} has no usable characters for a split name")
    return out


def _params_hash(params: dict[str, Any]) -> str:
    """Stable short hash of the parameters (JSON with sorted keys; tuples become lists)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:_HASH_LEN]


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    """Synthetic labs (``data.synthetic.make_lab_examples``); counts are full images per client."""

    labs: tuple[str, ...] = ()
    train_per_client: int = 8
    test_per_client: int = 4
    image_size: int = 64
    tile_size: int = 64
    seed: int = 0
    boundary_width: int = 2
    val_per_client: int = 0  # Full images per lab in the '<lab>_val' split (0: no split).
    grain_diameter_px: tuple[float, ...] = ()  # (lo, hi): log-uniform grain diameters for every lab
    boundary_width_max: int = 0  # > boundary_width: label line width drawn per image
    intensity: str = "raw"  # data/intensity.py: each full image normalised before it is tiled and stored

    @classmethod
    def create(cls, **params: Any) -> "SyntheticConfig":
        """Builds the config with a name that hashes every parameter."""
        params["labs"] = tuple(params.get("labs", ()))
        params["grain_diameter_px"] = tuple(float(x) for x in params.get("grain_diameter_px", ()))
        probe = cls(name="probe", **params)
        return cls(name=f"synthetic_{_params_hash(probe.params())}", **params)

    def params(self) -> dict[str, Any]:
        out = {
            f: getattr(self, f)
            for f in (
                "labs",
                "train_per_client",
                "test_per_client",
                "image_size",
                "tile_size",
                "seed",
                "boundary_width",
            )
        }
        if self.val_per_client:  # Only when used, so caches built before val splits existed stay valid.
            out["val_per_client"] = self.val_per_client
        if self.grain_diameter_px:  # the same: only when used
            out["grain_diameter_px"] = tuple(self.grain_diameter_px)
        if self.boundary_width_max:
            out["boundary_width_max"] = self.boundary_width_max
        if self.intensity != "raw":  # the same: raw caches keep their names
            out["intensity"] = self.intensity
        return out

    def client_names(self) -> tuple[str, ...]:
        return tuple(self.labs)


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """Real micrographs under ``data_dir`` (see ``folder.py`` for the layouts)."""

    data_dir: str = ""
    group_regex: str = ""
    test_fraction: float = 0.25
    seed: int = 0
    tile_size: int = 256
    tile_overlap: int = 0
    invert_labels: bool = False
    pixel_size_um: float = 0.0  # Metadata only (stored in info.metadata), never changes the pixels.
    val_fraction: float = 0.0  # Fraction of the training full images (groups) moved to '<client>_val'.
    train_groups: int = 0  # > 0: keep only this many labelled training micrographs (groups) per client
    fingerprint: str = ""  # Hash of the file listing (names, sizes, mtimes), filled in by create().
    intensity: str = "raw"  # data/intensity.py: each micrograph normalised (full precision) before tiling

    @classmethod
    def create(cls, **params: Any) -> "FolderConfig":
        """Builds the config; the name hashes the parameters and the current file listing."""
        params["data_dir"] = str(Path(params["data_dir"]).resolve())
        params["fingerprint"] = folder_fingerprint(params["data_dir"])
        probe = cls(name="probe", **params)
        return cls(name=f"folder_{_params_hash(probe.params())}", **params)

    def params(self) -> dict[str, Any]:
        out = {
            f: getattr(self, f)
            for f in (
                "data_dir",
                "group_regex",
                "test_fraction",
                "seed",
                "tile_size",
                "tile_overlap",
                "invert_labels",
                "pixel_size_um",
                "fingerprint",
            )
        }
        if self.val_fraction:  # Only when used, so caches built before val splits existed stay valid.
            out["val_fraction"] = self.val_fraction
        if self.train_groups:  # the same
            out["train_groups"] = self.train_groups
        if self.intensity != "raw":  # the same
            out["intensity"] = self.intensity
        return out

    def client_names(self) -> tuple[str, ...]:
        return tuple(folder_lib.discover_clients(self.data_dir))


def folder_fingerprint(data_dir: str | Path) -> str:
    """Hash of every image/label file's relative path, size and mtime: edited data -> new cache."""
    root = Path(data_dir)
    entries = []
    for client_dir in folder_lib.discover_clients(root).values():
        for sub in ("images", "labels"):
            d = client_dir / sub
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    if p.is_file():
                        st = p.stat()
                        entries.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return _params_hash({"files": entries})


def client_map(config: SyntheticConfig | FolderConfig) -> dict[str, str]:
    """Original client name -> sanitised split prefix; rejects names that collide after sanitising."""
    out: dict[str, str] = {}
    for name in config.client_names():
        s = sanitize_client_name(name)
        clash = [k for k, v in out.items() if v == s]
        if clash:
            raise ValueError(f"client names {clash[0]!r} and {name!r} both sanitise to {s!r}")
        out[name] = s
    return out


class GrainMicrographs(tfds.core.GeneratorBasedBuilder):
    """Tiles of grain micrographs with boundary masks, one train/test split pair per client."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: list = (
        []
    )  # Configs are always built from parameters (SyntheticConfig/FolderConfig.create).
    # tfds locates a builder's source through `importlib_resources` (not a dependency here); giving the
    # path directly avoids that import. It is only used to look for a (non-existent) checksums file.
    code_path = epath.Path(__file__)

    def __init__(self, *, config: SyntheticConfig | FolderConfig, data_dir: str | Path, **kwargs: Any):
        if not isinstance(config, (SyntheticConfig, FolderConfig)):
            raise TypeError(f"config must be a SyntheticConfig or FolderConfig, got {type(config).__name__}")
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=config, data_dir=str(data_dir), **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        t = self.builder_config.tile_size
        cfg = self.builder_config
        metadata = tfds.core.MetadataDict(
            client_names=dict(client_map(cfg)),
            params=json.loads(json.dumps(cfg.params(), default=str)),
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(t, t, 3), dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(t, t), dtype=np.uint8),
                    "source": tfds.features.Text(),
                    "position": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                    "index": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            metadata=metadata,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        cfg = self.builder_config
        splits = {}
        if isinstance(cfg, SyntheticConfig):
            counts = (
                ("train", cfg.train_per_client),
                ("test", cfg.test_per_client),
                ("val", cfg.val_per_client),
            )
            for lab, prefix in client_map(cfg).items():
                for split, n in counts:
                    if n <= 0:  # tfds cannot write an empty split; read_split(..., missing_ok=True) fills in.
                        continue
                    splits[f"{prefix}_{split}"] = self._generate_examples(("synthetic", lab, split, n))
            return splits
        clients = folder_lib.discover_clients(cfg.data_dir)
        for name, prefix in client_map(cfg).items():
            pairs = folder_lib.list_pairs(clients[name])
            folder_lib.check_client_labels(
                pairs,
                invert=cfg.invert_labels,
                invert_flag=INVERT_FLAG,
                where=f"client {name!r} ({clients[name]})",
            )
            for split, part in folder_splits(pairs, cfg, name).items():
                splits[f"{prefix}_{split}"] = self._generate_examples(("folder", name, split, part))
        return splits

    def _generate_examples(self, spec: tuple) -> Iterator[tuple[int, dict[str, Any]]]:
        kind, client, split, what = spec
        if kind == "synthetic":
            examples = _synthetic_examples(self.builder_config, client, split, what)
        else:
            examples = _folder_examples(self.builder_config, what)
        for i, ex in enumerate(examples):
            ex["index"] = np.int32(i)
            yield i, ex


def folder_splits(pairs: Sequence[tuple[Path, Path]], cfg: FolderConfig, client: str) -> dict[str, list]:
    """``{'train', 'test'[, 'val']}`` -> pairs of one folder client (``folder.split_pairs`` with ``cfg``'s
    fractions, seed, group regex and ``train_groups``)."""
    return folder_lib.split_pairs(
        pairs,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        group_regex=cfg.group_regex,
        val_fraction=cfg.val_fraction,
        train_groups=cfg.train_groups,
        client=client,
    )


def _synthetic_examples(cfg: SyntheticConfig, lab: str, split: str, n: int) -> Iterator[dict[str, Any]]:
    """Generates ``n`` full synthetic images of ``lab`` and yields their non-overlapping tiles."""
    from fedtransfer_jax.data import synthetic  # Lazy: written in parallel, heavy deps stay out of import.

    if lab not in synthetic.LAB_NAMES:
        raise ValueError(f"unknown synthetic lab {lab!r}; known labs: {tuple(synthetic.LAB_NAMES)}")
    if n <= 0:
        return
    images, labels, _ = synthetic.make_lab_examples(
        lab,
        n,
        cfg.image_size,
        lab_seed(cfg.seed, lab, split),
        boundary_width=cfg.boundary_width,
        diameter_px=tuple(cfg.grain_diameter_px) or None,
        # Hand annotations vary in width: the training labels do too; validation and test labels keep one
        # width, so model selection and the test metrics are not scored against random widths.
        boundary_width_max=cfg.boundary_width_max if split == "train" else 0,
    )
    for i in range(n):
        image = intensity.normalise(np.asarray(images[i]), cfg.intensity)  # the whole image, then its tiles
        img_t, pos = tiling.extract_tiles(image, cfg.tile_size, 0)
        lab_t, _ = tiling.extract_tiles(np.asarray(labels[i]), cfg.tile_size, 0)
        for it, lt, p in zip(img_t, lab_t, pos):
            yield {
                "image": encode_uint8(it),
                "label": (lt > 0).astype(np.uint8),
                "source": f"synthetic/{lab}/{split}/{i}",
                "position": np.asarray(p, np.int32),
            }


def _folder_examples(cfg: FolderConfig, pairs: Sequence[tuple[Path, Path]]) -> Iterator[dict[str, Any]]:
    """Reads each (image, label) pair, checks sizes, and yields its overlapping tiles."""
    for image_path, label_path in pairs:
        image, label = folder_lib.load_pair(image_path, label_path, invert=cfg.invert_labels)
        # The whole micrograph at its full bit depth, as predict normalises it; then tiles and 8 bits.
        image = intensity.normalise(image, cfg.intensity)
        img_t, pos = tiling.extract_tiles(image, cfg.tile_size, cfg.tile_overlap)
        lab_t, _ = tiling.extract_tiles(label, cfg.tile_size, cfg.tile_overlap)
        for it, lt, p in zip(img_t, lab_t, pos):
            yield {
                "image": encode_uint8(it),
                "label": lt,
                "source": Path(image_path).name,
                "position": np.asarray(p, np.int32),
            }


def make_builder(config: SyntheticConfig | FolderConfig, data_dir: str | Path) -> GrainMicrographs:
    """Builder for ``config`` writing array_record files under ``data_dir``."""
    return GrainMicrographs(config=config, data_dir=data_dir)


def read_split(builder: GrainMicrographs, split: str, missing_ok: bool = False) -> dict[str, np.ndarray]:
    """Reads a whole split into stacked numpy arrays, in generation order, via ``as_data_source``.

    ``missing_ok`` returns empty arrays for a split that was never written (a zero example count).
    """
    t = builder.builder_config.tile_size
    if split not in builder.info.splits and not missing_ok:
        raise ValueError(
            f"split {split!r} not in {builder.info.full_name}; available: {sorted(builder.info.splits)}"
        )
    source = builder.as_data_source(split) if split in builder.info.splits else []
    n = len(source)
    if n == 0:
        return {
            "image": np.zeros((0, t, t, 3), np.uint8),
            "label": np.zeros((0, t, t), np.uint8),
            "source": np.zeros((0,), object),
            "position": np.zeros((0, 2), np.int32),
        }
    records = source.__getitems__(list(range(n)))
    records = sorted(records, key=lambda r: int(r["index"]))
    return {
        "image": np.stack([r["image"] for r in records]),
        "label": np.stack([r["label"] for r in records]),
        "source": np.array(
            [r["source"].decode() if isinstance(r["source"], bytes) else r["source"] for r in records],
            dtype=object,
        ),
        "position": np.stack([r["position"] for r in records]).astype(np.int32),
    }
