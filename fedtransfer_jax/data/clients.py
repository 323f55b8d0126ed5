"""What the trainer consumes: per-client arrays padded to a common size, plus held-out test sets.

Clients hold different numbers of tiles, but one jit-compiled round wants a single ``[C, N, ...]``
array, so every client is zero-padded to the same N and ``mask`` marks the real examples; padded
examples carry zero weight downstream (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from fedtransfer_jax.data import intensity
from fedtransfer_jax.runtime.pixels import decode_uint8, encode_uint8

Arrays = tuple[np.ndarray, np.ndarray]


class ClientData(NamedTuple):
    """Padded federated training data: images [C,N,H,W,3] f32 in [0, 1] (or uint8: 8-bit data), labels
    [C,N,H,W] u8, mask [C,N] bool. On device the training images are kept uint8 whenever they are 8-bit
    (``as_uint8_images``; ``run_context.place_clients``) and decoded per batch inside the local step."""

    images: Any
    labels: Any
    mask: Any

    @property
    def num_examples(self) -> Any:
        """Real (unpadded) examples per client, int32 [C] (works for numpy and jax arrays)."""
        return self.mask.sum(axis=1).astype(np.int32)


def num_examples(data: ClientData) -> Any:
    """Functional form of ``ClientData.num_examples`` (handy inside jax.tree maps)."""
    return data.num_examples


def as_uint8_images(images: Any) -> np.ndarray | None:
    """``images`` as uint8 when that loses nothing, else None: uint8 already, or float32 values that are all
    exactly k/255 (what ``_to_arrays`` makes of the stored 8-bit tiles; decoded back bit for bit by
    ``data.pixels.decode_uint8`` on the host, ``fl.algorithms.base.decode_images`` on device). Restyled or
    otherwise processed float images give None.

    Checked one client at a time, so the temporaries stay a client's size."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype != np.float32 or images.size == 0:
        return None
    out = np.empty(images.shape, np.uint8)
    for i in range(images.shape[0]):
        x = images[i]
        k = np.rint(x * np.float32(255.0))
        if k.min(initial=0.0) < 0 or k.max(initial=0.0) > 255:
            return None
        out[i] = k.astype(np.uint8)
        if not np.array_equal(decode_uint8(out[i]), x):
            return None
    return out


def pad_clients(
    clients: Sequence[Arrays],
    pad_to: int | None = None,
    names: Sequence[str] | None = None,
) -> ClientData:
    """Stacks ``[(images [N_c,H,W,3], labels [N_c,H,W]), ...]`` into zero-padded ``ClientData``.

    Args:
      clients: per-client image/label arrays; images are cast to float32 (kept uint8 when every client's
        images are uint8), labels to uint8.
      pad_to: common N (default: the largest client). Must be >= every client's N.
      names: optional client names used in error messages.

    Raises:
      ValueError: no clients, an empty client, inconsistent shapes, or pad_to too small (names the client).
    """
    if len(clients) == 0:
        raise ValueError("pad_clients needs at least one client")

    def who(i: int) -> str:
        return f"client {i} ({names[i]!r})" if names is not None else f"client {i}"

    image_dtype = np.uint8 if all(np.asarray(im).dtype == np.uint8 for im, _ in clients) else np.float32
    ims = [np.asarray(im, image_dtype) for im, _ in clients]
    lbs = [np.asarray(lb) for _, lb in clients]
    for i, (im, lb) in enumerate(zip(ims, lbs)):
        if im.ndim != 4 or im.shape[-1] != 3:
            raise ValueError(f"{who(i)}: images must be [N,H,W,3], got {im.shape}")
        if lb.shape != im.shape[:3]:
            raise ValueError(f"{who(i)}: labels {lb.shape} do not match images {im.shape}")
        if im.shape[0] == 0:
            raise ValueError(f"{who(i)} has no examples")
        if im.shape[1:] != ims[0].shape[1:]:
            raise ValueError(
                f"{who(i)}: image shape {im.shape[1:]} differs from {who(0)}'s {ims[0].shape[1:]}"
            )
    sizes = [im.shape[0] for im in ims]
    n = max(sizes) if pad_to is None else int(pad_to)
    if n < max(sizes):
        i = int(np.argmax(sizes))
        raise ValueError(f"pad_to={n} is smaller than {who(i)}'s {sizes[i]} examples")
    c, (h, w) = len(clients), ims[0].shape[1:3]
    images = np.zeros((c, n, h, w, 3), image_dtype)
    labels = np.zeros((c, n, h, w), np.uint8)
    mask = np.zeros((c, n), bool)
    for i, (im, lb) in enumerate(zip(ims, lbs)):
        images[i, : sizes[i]] = im
        labels[i, : sizes[i]] = lb
        mask[i, : sizes[i]] = True
    return ClientData(images, labels, mask)


class FederatedData(NamedTuple):
    """Everything an experiment needs: trained clients (padded), their test sets, unseen clients' sets,
    and validation tiles of trained clients (for choosing post-processing; never trained on).

    ``val`` maps a trained client to its validation ``(images, labels)``; clients without validation
    tiles (``data.val_per_client`` / ``data.val_fraction`` 0, the default) are absent, so by default
    ``val == {}``.
    """

    client_names: tuple[str, ...]
    train: ClientData
    test: dict[str, Arrays]
    unseen: dict[str, Arrays]
    val: Mapping[str, Arrays] = MappingProxyType({})  # Read-only default: never shared mutable state.
    # A data-poor recipient lab (`data.recipient`, `apply_recipient`): its name, and its unlabelled training
    # images [n,H,W,3] (only its style message reads them; they never leave it). At `recipient_labels = 0`
    # it is no segmentation client: its test tiles are in `unseen`.
    recipient: str = ""
    unlabelled: Mapping[str, np.ndarray] = MappingProxyType({})


_DEFAULTS: dict[str, Any] = {
    "source": "synthetic",
    "dir": "",
    "clients": (),
    "unseen_clients": (),
    "image_size": 64,
    "tile_size": 64,
    "tile_overlap": 0,
    "train_per_client": 8,
    "test_per_client": 4,
    "test_fraction": 0.25,
    "group_regex": "",
    "invert_labels": False,
    "pixel_size_um": 0.0,
    "seed": 0,
    "boundary_width": 2,
    "boundary_width_max": 0,  # synthetic: > boundary_width draws each image's label line width
    "grain_diameter_px": (),  # synthetic: (lo, hi) px, log-uniform grain diameters for every lab
    "tfds_dir": "",
    "val_per_client": 0,  # synthetic: full images per lab in a validation split
    "val_fraction": 0.0,  # folder: fraction of the training full images held out for validation
    "train_groups": 0,  # folder: > 0 keeps this many labelled training micrographs per client
    "prior_labs": 0,  # source 'prior_labs': how many labs to draw from the population prior (data/prior_labs.py)
    # A data-poor recipient lab (apply_recipient; experiments/data_poor.py): one of `clients` keeps only the
    # first `recipient_labels` of its training tiles labelled and the next `recipient_unlabelled` as images.
    "recipient": "",
    "recipient_labels": 0,
    "recipient_unlabelled": 0,
    "intensity": intensity.RAW,  # per-image normalisation of every image (data/intensity.py): 'raw' or 'stretch'
}


def data_field(cfg: Any, key: str) -> Any:
    """``cfg.key`` of a data config with the documented default when the config omits it."""
    value = cfg.get(key, _DEFAULTS[key]) if hasattr(cfg, "get") else getattr(cfg, key, _DEFAULTS[key])
    return tuple(value) if isinstance(value, list) else value



def folder_split(pairs: Sequence, cfg: Any, client: str = "") -> dict[str, list]:
    """``{'train', 'test'[, 'val']}``: one folder client's pairs split as a run with data config ``cfg``
    splits them (``folder.split_pairs`` with its fractions, seed, group regex and ``train_groups``; the tfds
    builder stores exactly these splits)."""
    from fedtransfer_jax.data import folder  # noqa: PLC0415

    return folder.split_pairs(
        pairs,
        test_fraction=float(data_field(cfg, "test_fraction")),
        seed=int(data_field(cfg, "seed")),
        group_regex=str(data_field(cfg, "group_regex") or ""),
        val_fraction=float(data_field(cfg, "val_fraction")),
        train_groups=int(data_field(cfg, "train_groups")),
        client=client,
    )


def as_names(value: Any, key: str) -> tuple[str, ...]:
    """Normalises a client list field; a bare string would otherwise be split into characters."""
    if isinstance(value, str):
        return (value,) if value else ()
    names = tuple(str(v) for v in value)
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"cfg.{key} lists {sorted(dup)} more than once")
    return names


def _intensity(cfg: Any) -> str:
    """``data.intensity`` (data/intensity.py), checked: how every image of the run is fed to the model. Tiles
    are normalised as whole images before they are cut and stored (tfds builders, prior labs), as predict
    normalises a whole micrograph before its sliding window."""
    return intensity.check_mode(data_field(cfg, "intensity") or intensity.RAW)


def _normalised(images: np.ndarray, mode: str) -> np.ndarray:
    """Whole images ``[N, H, W, 3]`` as the model is fed them, on the 8-bit levels k/255 as every stored tile
    is (so that they stay uint8 on device, ``as_uint8_images``)."""
    if len(images) == 0:
        return images
    return decode_uint8(encode_uint8(intensity.normalise(images, mode)))


def _to_arrays(split: dict[str, np.ndarray]) -> Arrays:
    """Stored uint8 tiles -> (float32 images in [0, 1], uint8 labels)."""
    return decode_uint8(split["image"]), split["label"].astype(np.uint8)


def _synthetic_builder_config(cfg: Any, labs: tuple[str, ...]) -> Any:
    """SyntheticConfig for ``labs`` (validated against ``synthetic.LAB_NAMES``) from the data fields."""
    from fedtransfer_jax.data import synthetic
    from fedtransfer_jax.data import tfds_builders as tb

    for name in labs:
        if name not in synthetic.LAB_NAMES:
            raise ValueError(f"unknown client {name!r}: synthetic labs are {tuple(synthetic.LAB_NAMES)}")
    if int(data_field(cfg, "train_per_client")) <= 0 or int(data_field(cfg, "test_per_client")) < 0:
        raise ValueError("cfg.train_per_client must be > 0 and cfg.test_per_client >= 0 for synthetic data")
    if int(data_field(cfg, "val_per_client")) < 0:
        raise ValueError(f"data.val_per_client must be >= 0, got {data_field(cfg, 'val_per_client')}")
    scale = synthetic.check_scale_options(
        data_field(cfg, "grain_diameter_px"), int(data_field(cfg, "boundary_width")), int(data_field(cfg, "boundary_width_max"))
    )
    return tb.SyntheticConfig.create(
        labs=labs,
        train_per_client=int(data_field(cfg, "train_per_client")),
        test_per_client=int(data_field(cfg, "test_per_client")),
        image_size=int(data_field(cfg, "image_size")),
        tile_size=int(data_field(cfg, "tile_size")),
        seed=int(data_field(cfg, "seed")),
        boundary_width=int(data_field(cfg, "boundary_width")),
        val_per_client=int(data_field(cfg, "val_per_client")),
        grain_diameter_px=scale or (),
        boundary_width_max=int(data_field(cfg, "boundary_width_max")),
        intensity=_intensity(cfg),
    )


def _folder_builder_config(cfg: Any) -> Any:
    """FolderConfig for the real micrographs under ``cfg.dir`` (every client folder found there)."""
    from fedtransfer_jax.data import tfds_builders as tb

    data_dir = data_field(cfg, "dir")
    if not data_dir:
        raise ValueError(f"cfg.dir is empty: source={data_field(cfg, 'source')!r} needs the data folder")
    train_groups = int(data_field(cfg, "train_groups"))
    if train_groups < 0:
        raise ValueError(f"data.train_groups must be >= 0 (0 = every training micrograph), got {train_groups}")
    val_fraction = float(data_field(cfg, "val_fraction"))
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    return tb.FolderConfig.create(
        data_dir=str(data_dir),
        group_regex=str(data_field(cfg, "group_regex") or ""),
        test_fraction=float(data_field(cfg, "test_fraction")),
        seed=int(data_field(cfg, "seed")),
        tile_size=int(data_field(cfg, "tile_size")),
        tile_overlap=int(data_field(cfg, "tile_overlap")),
        invert_labels=bool(data_field(cfg, "invert_labels")),
        pixel_size_um=float(data_field(cfg, "pixel_size_um")),
        val_fraction=val_fraction,
        train_groups=train_groups,
        intensity=_intensity(cfg),
    )


def builder_config_from(cfg: Any) -> Any:
    """The tfds builder config (Synthetic/FolderConfig) matching an experiment config's data fields.

    Only for the single-builder sources 'synthetic' and 'folder'; 'mixed' needs two builders
    (``builder_configs_from``).
    """
    source = data_field(cfg, "source")
    clients = as_names(data_field(cfg, "clients"), "clients")
    unseen = as_names(data_field(cfg, "unseen_clients"), "unseen_clients")
    if source == "synthetic":
        if not clients:
            from fedtransfer_jax.data import synthetic

            labs = [n for n in unseen if n not in synthetic.LAB_NAMES]
            if labs:  # Name the unknown lab first: it is the more useful message.
                raise ValueError(
                    f"unknown client {labs[0]!r}: synthetic labs are {tuple(synthetic.LAB_NAMES)}"
                )
            raise ValueError("cfg.clients is empty: name the synthetic labs to train on")
        return _synthetic_builder_config(cfg, clients + unseen)
    if source == "folder":
        return _folder_builder_config(cfg)
    if source == "mixed":
        raise ValueError("cfg.source='mixed' uses two tfds builders: call builder_configs_from(cfg)")
    if source == "prior_labs":
        raise ValueError("cfg.source='prior_labs' builds its unseen labs only: call builder_configs_from(cfg)")
    raise ValueError(f"unknown cfg.source {source!r}; expected 'synthetic', 'folder', 'mixed' or 'prior_labs'")


def mixed_client_kinds(cfg: Any) -> dict[str, str]:
    """For source 'mixed': every listed client (trained, then unseen) -> 'folder' or 'synthetic'.

    A real client is a client folder under ``cfg.dir`` (named as ``folder.discover_clients`` names it);
    a synthetic one is a lab of ``synthetic.LAB_NAMES``. Resolving the kind from the name alone is what
    lets one ``cfg.clients`` list mix both, so a name that would mean both is rejected, not guessed.

    Raises:
      ValueError: empty ``cfg.clients``, ``cfg.dir`` missing, unknown names (listing what exists), or a
        real client folder named like a synthetic lab.
    """
    from fedtransfer_jax.data import folder as folder_lib
    from fedtransfer_jax.data import synthetic

    clients = as_names(data_field(cfg, "clients"), "clients")
    unseen = as_names(data_field(cfg, "unseen_clients"), "unseen_clients")
    if not clients:
        raise ValueError("cfg.clients is empty: source='mixed' needs the real and synthetic clients named")
    data_dir = data_field(cfg, "dir")
    if not data_dir:
        raise ValueError("cfg.dir is empty: source='mixed' needs the data folder of the real clients")
    real = tuple(folder_lib.discover_clients(data_dir))
    labs = tuple(synthetic.LAB_NAMES)
    wanted = clients + unseen
    clash = sorted(set(real) & set(labs) & set(wanted))
    if clash:
        raise ValueError(
            f"client names {clash} are both client folders in {str(data_dir)!r} and synthetic labs; "
            "rename the folders"
        )
    unknown = [n for n in wanted if n not in real and n not in labs]
    if unknown:
        raise ValueError(
            f"unknown clients {unknown} for source 'mixed': real clients in {str(data_dir)!r} are "
            f"{sorted(real)}, synthetic labs are {labs}"
        )
    return {n: ("folder" if n in real else "synthetic") for n in wanted}


def builder_configs_from(cfg: Any) -> list[Any]:
    """Every tfds builder config that ``cfg``'s data needs: one, or for 'mixed' folder + synthetic.

    For 'mixed' the folder builder covers all client folders under ``cfg.dir`` (its cache is shared
    with source 'folder'), and the synthetic builder only the labs named; a builder nobody needs is
    left out. Both use ``cfg.tile_size``, so their tiles stack into one ``ClientData``.
    """
    if data_field(cfg, "source") == "prior_labs":  # its labs are rendered directly (data/prior_labs.py)
        unseen = as_names(data_field(cfg, "unseen_clients"), "unseen_clients")
        return [_synthetic_builder_config(cfg, unseen)] if unseen else []
    if data_field(cfg, "source") != "mixed":
        return [builder_config_from(cfg)]
    kinds = mixed_client_kinds(cfg)
    configs = []
    if "folder" in kinds.values():
        configs.append(_folder_builder_config(cfg))
    labs = tuple(n for n, k in kinds.items() if k == "synthetic")
    if labs:
        configs.append(_synthetic_builder_config(cfg, labs))
    return configs


def load_federated_data(
    cfg: Any, workdir: str | Path, rendered: Mapping[str, Callable[[str], Arrays]] | None = None
) -> FederatedData:
    """Builds (once) and reads the tfds cache for ``cfg``'s clients.

    The cache lives in ``cfg.tfds_dir`` (default ``<workdir>/tfds``); a second call with the same
    parameters reuses it. Trained clients' train splits are padded into ``ClientData``; ``test`` holds
    their test splits; ``unseen`` holds the *test* split of every unseen client (same size and
    protocol as a seen client's test set; unseen clients are never trained on); ``val`` holds the
    validation split of every trained client that has one (``cfg.val_per_client`` synthetic images per
    lab, ``cfg.val_fraction`` of a folder client's training images; default none).

    ``cfg.source``: 'synthetic' (labs of ``data.synthetic``), 'folder' (real micrographs under
    ``cfg.dir``), 'mixed' (both; ``cfg.clients`` names real client folders and synthetic labs side by
    side, e.g. ``('tbm_tint_etched', 'brightfield', 'sem')``, all cut into ``cfg.tile_size`` tiles) or
    'prior_labs' (``cfg.prior_labs`` labs drawn from the population prior, loaded by
    ``data.prior_labs.load_federated_data``, which passes them here as ``rendered``: client name -> its
    split's ``(images, labels)``, made without tfds; the unseen clients are synthetic labs from the tfds
    cache).

    Raises:
      ValueError: unknown source or client (named), a client both trained and unseen, or empty data.
    """
    from fedtransfer_jax.runtime import distributed
    from fedtransfer_jax.data import tfds_builders as tb

    source, rendered = data_field(cfg, "source"), dict(rendered or {})
    if source == "prior_labs" and not rendered:
        raise ValueError("data.source='prior_labs' is loaded by data.prior_labs.load_federated_data (it renders labs)")
    count = data_field(cfg, "prior_labs")
    if count and source != "prior_labs":  # training on other clients than asked for: stop instead
        raise ValueError(f"data.prior_labs={count!r} is only read by data.source='prior_labs' (it is {source!r})")
    configs = builder_configs_from(cfg)
    available: dict[str, tuple[int, str]] = {}  # original name -> (builder index, split prefix)
    for b, config in enumerate(configs):
        for name, prefix in tb.client_map(config).items():
            available.setdefault(name, (b, prefix))  # 'mixed' already rejected names of both kinds.
    for name in rendered:
        available.setdefault(name, (-1, name))  # -1: rendered directly, no builder
    clients = as_names(data_field(cfg, "clients"), "clients")
    unseen = as_names(data_field(cfg, "unseen_clients"), "unseen_clients")
    both = set(clients) & set(unseen)
    if both:
        raise ValueError(f"clients {sorted(both)} are listed both in cfg.clients and cfg.unseen_clients")
    for name in clients + unseen:
        if name not in available:
            raise ValueError(
                f"unknown client {name!r}; available clients in {cfg.get('dir', '')!r}: {sorted(available)}"
            )
    if not clients:
        clients = tuple(n for n in available if n not in unseen)
    if not clients:
        raise ValueError("no clients left to train on after removing cfg.unseen_clients")

    data_dir = data_field(cfg, "tfds_dir") or str(Path(workdir) / "tfds")

    def build() -> list:
        builders = [tb.make_builder(config, data_dir) for config in configs]
        for builder in builders:
            builder.download_and_prepare()
        return builders

    # Several processes: process 0 builds the cache while the others wait (two writers of one cache would
    # race), then they open what it wrote (download_and_prepare finds it: nothing is generated again), so
    # every process reads the same tiles. Its failure (e.g. a label check) stops every process.
    builders = distributed.on_primary(build)
    if builders is None:
        builders = build()

    def read(name: str, split: str) -> Arrays:  # tiles stored as the model is fed them (data.intensity)
        b, prefix = available[name]
        if b < 0:
            return rendered[name](split)
        return _to_arrays(tb.read_split(builders[b], f"{prefix}_{split}", missing_ok=True))

    check_recipient(cfg, clients)
    train = {n: read(n, "train") for n in clients}
    val = {n: read(n, "val") for n in clients}
    test = {n: read(n, "test") for n in clients}
    unseen_test = {n: read(n, "test") for n in unseen}
    recipient, unlabelled = str(data_field(cfg, "recipient") or ""), {}
    if recipient:
        clients, train, unlabelled = apply_recipient(cfg, clients, train)
        val.pop(recipient)  # k labels are all it has: no validation tiles (model selection by the others)
        if recipient not in clients:  # k = 0: no segmentation client, evaluated like a lab nobody trained on
            unseen_test = {recipient: test.pop(recipient), **unseen_test}
    return FederatedData(
        client_names=clients,
        train=pad_clients([train[n] for n in clients], names=clients),
        test=test,
        unseen=unseen_test,
        val={n: arrays for n, arrays in val.items() if len(arrays[0])},
        recipient=recipient,
        unlabelled=unlabelled,
    )


def check_recipient(cfg: Any, clients: Sequence[str]) -> None:
    """Validates the data-poor recipient keys (`data.recipient`, `data.recipient_labels`,
    `data.recipient_unlabelled`); ValueError naming the key."""
    recipient = str(data_field(cfg, "recipient") or "")
    k, n = int(data_field(cfg, "recipient_labels")), int(data_field(cfg, "recipient_unlabelled"))
    if not recipient:
        for key, value in (("recipient_labels", k), ("recipient_unlabelled", n)):
            if value:
                raise ValueError(f"config key data.{key}={value} is only read with data.recipient (it is empty)")
        return
    if recipient not in clients:
        raise ValueError(f"config key data.recipient: {recipient!r} is not one of data.clients {tuple(clients)}")
    if len(clients) < 2:
        raise ValueError("config key data.recipient: the recipient needs at least one other client to federate with")
    if k < 0:
        raise ValueError(f"config key data.recipient_labels must be >= 0, got {k}")
    if n < 0:
        raise ValueError(f"config key data.recipient_unlabelled must be >= 0, got {n}")
    if k == 0 and n == 0:
        raise ValueError(
            "config key data.recipient_unlabelled must be > 0 when data.recipient_labels = 0: the recipient "
            "would hold nothing at all"
        )
    per_client = int(data_field(cfg, "train_per_client"))
    if data_field(cfg, "source") in ("synthetic", "prior_labs") and k + n > per_client:
        raise ValueError(
            f"config keys data.recipient_labels + data.recipient_unlabelled = {k} + {n} exceed "
            f"data.train_per_client={per_client}: the recipient's tiles are drawn from its training split"
        )


def apply_recipient(
    cfg: Any, clients: tuple[str, ...], train: dict[str, Arrays]
) -> tuple[tuple[str, ...], dict[str, Arrays], dict[str, np.ndarray]]:
    """The recipient's training split cut into its first k labelled tiles (`data.recipient_labels`) and the
    next n tiles as unlabelled images (`data.recipient_unlabelled`; their labels are dropped here, on the
    client). Returns (segmentation clients, their training arrays, {recipient: unlabelled images}); at k = 0
    the recipient is no segmentation client. Deterministic: the split's order (from the data seed)."""
    recipient = str(data_field(cfg, "recipient"))
    k, n = int(data_field(cfg, "recipient_labels")), int(data_field(cfg, "recipient_unlabelled"))
    images, labels = train[recipient]
    if len(images) < k + n:
        raise ValueError(
            f"config keys data.recipient_labels + data.recipient_unlabelled = {k} + {n}: {recipient!r} has only "
            f"{len(images)} training tiles"
        )
    train = dict(train)
    unlabelled = {recipient: np.asarray(images[k : k + n])}
    if k == 0:
        del train[recipient]
        return tuple(c for c in clients if c != recipient), train, unlabelled
    train[recipient] = (images[:k], labels[:k])
    return clients, train, unlabelled


WHOLE_TEST_SPLIT = "test_whole"  # its own split name: a seed no training, validation or test tile shares


def whole_test_images(
    cfg: Any,
    labs: Sequence[str],
    n: int,
    size: int,
    rendered: Mapping[str, Callable[[int, int], Arrays]] | None = None,
) -> tuple[dict[str, Arrays], list[str]]:
    """``({lab: (images f32 [n,S,S,3], labels u8 [n,S,S])}, notes)``: ``n`` whole synthetic test micrographs
    of ``size`` px per lab (the v2 protocol's primary endpoint scores them through predict's sliding window).

    Generated directly with ``synthetic.make_lab_examples`` (no tfds) from
    ``seeds.lab_seed(cfg.seed, lab, 'test_whole')``: a split name of its own, so disjoint by construction
    from the lab's train/val/test tiles. Images are normalised (``data.intensity``), stored as 8 bits and
    decoded, as every tile is. Labs that are not synthetic (real folder clients) are skipped with a note: only
    synthetic labs for now, except those in ``rendered`` (lab -> ``(n, size) -> (images, labels)``: the prior labs' own split 'test_whole',
    ``data.prior_labs.whole_test_images``).
    """
    from fedtransfer_jax.data import synthetic
    from fedtransfer_jax.data.seeds import lab_seed

    out: dict[str, Arrays] = {}
    notes: list[str] = []
    if n <= 0:
        return out, notes
    if size < 8:
        raise ValueError(f"eval.whole_image_size must be >= 8 px, got {size}")
    seed = int(data_field(cfg, "seed"))
    width = int(data_field(cfg, "boundary_width"))
    width_max = int(data_field(cfg, "boundary_width_max"))
    scale = synthetic.check_scale_options(data_field(cfg, "grain_diameter_px"), width, width_max)
    mode = _intensity(cfg)
    for lab in labs:
        if lab in (rendered or {}):
            images, labels = rendered[lab](n, size)  # 8-bit already: normalised as the lab's tiles are
            out[lab] = (_normalised(images, mode), labels)
            continue
        if lab not in synthetic.LAB_NAMES or data_field(cfg, "source") == "folder":
            notes.append(f"{lab}: not a synthetic lab, no whole test images (only synthetic labs for now)")
            continue
        images, labels, _ = synthetic.make_lab_examples(
            lab,
            n,
            size,
            lab_seed(seed, lab, WHOLE_TEST_SPLIT),
            boundary_width=width,
            diameter_px=scale,  # test labels keep one width (the training labels' width varies)
        )
        # Normalised at full precision, then stored in 8 bits, as the builders make the tiles.
        out[lab] = (_normalised(np.asarray(images, np.float32), mode), (np.asarray(labels) > 0).astype(np.uint8))
    return out, notes
