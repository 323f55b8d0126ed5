"""Loading a trained segmenter from a workdir and running it on micrographs of any size.

Large images are cut into overlapping tiles (data/tiling.py), predicted in fixed-size batches (one
compilation), optionally averaged over flips (test-time augmentation), and stitched back with a smooth
window so tile seams vanish.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import shutil
import sys
import tempfile
import traceback
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedtransfer_jax.runtime import checkpointing
from fedtransfer_jax import models
from fedtransfer_jax.data.batching import map_in_batches
from fedtransfer_jax.data import tiling
from fedtransfer_jax.data import calibration, image_files, intensity


def make_prob_fn(model) -> Callable:
    """Jitted `(params, images [B,H,W,3]) -> boundary probability [B,H,W]`."""

    @jax.jit
    def prob_fn(params, images):
        return jax.nn.softmax(model.apply({"params": params}, images), axis=-1)[..., 1]

    return prob_fn


def batched_probs(prob_fn: Callable, params: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """`prob_fn` over [N,H,W,3] images in fixed-size batches (the last one zero-padded, so one compilation)."""
    if len(images) == 0:
        return np.zeros((0,) + images.shape[1:3], np.float32)
    return map_in_batches(lambda x: prob_fn(params, jnp.asarray(x, jnp.float32)), [images], batch)


def tile_probs_of(prob_fn: Callable, params: Any, batch: int = 16) -> Callable:
    """`tiles -> boundary probabilities` of `prob_fn` with `params`, batched as `LoadedModel.tile_probs` is."""
    return lambda tiles: batched_probs(prob_fn, params, tiles, batch)


class LoadedModel:
    """A segmenter restored from `<workdir>/checkpoints/<method>[/<client>]`."""

    def __init__(self, config: ml_collections.ConfigDict, params: Any, tag: str):
        self.config = config
        self.params = params
        self.tag = tag
        self.tile = int(config.data.tile_size)
        self.model = models.build_model(config.model)
        model = self.model

        self._prob_fn = make_prob_fn(model)

    def tile_probs(self, tiles: np.ndarray, batch: int = 16) -> np.ndarray:
        """Boundary probability for [T, tile, tile, 3] tiles."""
        return tile_probs_of(self._prob_fn, self.params, batch)(tiles)

    def predict_prob(
        self, image: np.ndarray, *, overlap: int | None = None, flips: bool = False
    ) -> np.ndarray:
        """Boundary probability [H, W] for an image [H, W, 3] of any size (tiled sliding window)."""
        return sliding_window_prob(self.tile_probs, image, self.tile, overlap=overlap, flips=flips)


_TILE_PROGRESS: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "tile_progress", default=None
)
PROGRESS_CHUNK = 64  # tiles between two progress reports (a multiple of the prediction batch)


@contextlib.contextmanager
def tile_progress(callback: Callable[[int, int], None]):
    """Within it, each sliding-window prediction calls ``callback(tiles_done, tiles_total)`` as it goes (every
    ``PROGRESS_CHUNK`` tiles, flips counted), so a large image's progress can be shown. Same numbers as without."""
    token = _TILE_PROGRESS.set(callback)
    try:
        yield
    finally:
        _TILE_PROGRESS.reset(token)


def _reporting(tile_probs: Callable, total: int) -> Callable:
    """``tile_probs`` run in chunks that report to the active ``tile_progress`` callback, if any."""
    callback = _TILE_PROGRESS.get()
    if callback is None:
        return tile_probs
    done = 0

    def run(tiles: np.ndarray) -> np.ndarray:
        nonlocal done
        outs = []
        for s in range(0, len(tiles), PROGRESS_CHUNK):
            outs.append(tile_probs(tiles[s : s + PROGRESS_CHUNK]))
            done += len(outs[-1])
            callback(done, total)
        return np.concatenate(outs) if outs else tile_probs(tiles)

    return run


def sliding_window_prob(
    tile_probs: Callable, image: np.ndarray, tile: int, *, overlap: int | None = None, flips: bool = False
) -> np.ndarray:
    """Boundary probability [H, W] for an image [H, W, 3] of any size: the one sliding window (predict's
    `LoadedModel.predict_prob` and the training run's whole-image test evaluation both call it).

    `tile_probs`: `[T, tile, tile, 3] -> [T, tile, tile]` (a model's `tile_probs`, or `tile_probs_of`).
    Overlapping `tile` x `tile` tiles (default overlap tile/4), optionally averaged over the 4 flips,
    stitched back with a Hann window."""
    overlap = tile // 4 if overlap is None else overlap
    h, w = image.shape[:2]
    tiles, positions = tiling.extract_tiles(image, tile, overlap)
    tile_probs = _reporting(tile_probs, len(tiles) * (4 if flips else 1))
    if flips:
        views = [
            (lambda t: t, lambda p: p),
            (lambda t: t[:, :, ::-1], lambda p: p[:, :, ::-1]),
            (lambda t: t[:, ::-1], lambda p: p[:, ::-1]),
            (lambda t: t[:, ::-1, ::-1], lambda p: p[:, ::-1, ::-1]),
        ]
        probs = np.mean([undo(tile_probs(np.ascontiguousarray(do(tiles)))) for do, undo in views], axis=0)
    else:
        probs = tile_probs(tiles)
    return tiling.stitch(probs, positions, (h, w), tile, blend="hann")


def config_from_workdir(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a workdir written by launch.py?")
    try:
        with open(path) as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError(f"a JSON {type(config).__name__}, not an object")
        return ml_collections.ConfigDict(config)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not a readable config ({e}): is {workdir!r} an intact workdir written by launch.py?"
        ) from None


def is_local(workdir: str, method: str) -> bool:
    """A method of kind 'local' (one model per client), by the workdir's config (name 'local' otherwise)."""
    from fedtransfer_jax.runs import engine  # noqa: PLC0415

    try:
        return engine.method_spec(config_from_workdir(workdir), method).kind == "local"
    except (FileNotFoundError, ValueError):
        return method == "local"


STYLE_NET_SUFFIX = "_style_net"  # checkpoints/<method>_style_net: FedTransfer's style network, not a segmenter


def segmenter_methods(workdir: str) -> list[str]:
    """The methods with segmenter checkpoints in `workdir` (what --method may name): the folders of
    `checkpoints/` except the style networks that style-sharing methods train first."""
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        return []
    return sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.endswith(STYLE_NET_SUFFIX)
    )


def sole_client(workdir: str, method: str) -> str | None:
    """The client of a local method in a run of exactly one client (a lab fine-tuning alone,
    experiments/finetune.py): its model is the run's model, so `--client` may be left out. None otherwise,
    including a run of several labs stopped after its first lab's model (one checkpoint folder, not one lab):
    the run's clients are those its summary.json lists from the start."""
    if not is_local(workdir, method):
        return None
    try:
        with open(os.path.join(workdir, "summary.json")) as f:
            clients = json.load(f).get("clients")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(clients, list) or len(clients) != 1:
        return None
    client = str(clients[0])
    return client if os.path.isdir(os.path.join(workdir, "checkpoints", method, client)) else None


def checkpoint_tag(workdir: str, method: str, client: str | None) -> str:
    base = os.path.join(workdir, "checkpoints", method)
    have = segmenter_methods(workdir)
    if method not in have:
        if method.endswith(STYLE_NET_SUFFIX) and os.path.isdir(base):
            why = f"is the style network of {method[: -len(STYLE_NET_SUFFIX)]!r}, not a segmenter"
        else:
            why = f"has no checkpoints in {base}"
        raise FileNotFoundError(f"--method {method!r} {why}; available: {have}")
    if is_local(workdir, method):
        clients = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
        if client is None:
            client = sole_client(workdir, method)
        if client is None:
            raise ValueError(f"method {method!r} has one model per client: pass --client (one of {clients})")
        if client not in clients:
            raise ValueError(f"no local model for client {client!r}; available: {clients}")
        return f"{method}/{client}"
    return method


class IncompleteModelError(RuntimeError):
    """The method's training stopped before its last round (the run was interrupted)."""


def load_model(
    workdir: str, method: str, client: str | None = None, *, allow_incomplete: bool = False
) -> LoadedModel:
    """Restores the params of `method` that its run scored on test (no optimizer or client state is rebuilt):
    the last round's, or, where the run chose on validation (`eval.select='best_val'`), the params it kept
    in `<workdir>/best_val/<tag>`, so predict and evaluate use the model summary.json describes.

    Refuses a method whose training did not finish (its latest checkpoint is before the last round) unless
    `allow_incomplete` (then the latest round's params: no choice was made yet); the returned model says
    which round it holds (`.round`, `.rounds`) and how it was chosen (`.selection`).
    """
    from fedtransfer_jax.runs import engine  # noqa: PLC0415

    config = config_from_workdir(workdir)
    tag = checkpoint_tag(workdir, method, client)
    directory = os.path.join(workdir, "checkpoints", tag)
    params, meta, step = _restore(directory, engine.params_template(config))
    if params is None:
        raise FileNotFoundError(f"no complete checkpoint in {directory}")
    rounds = int(meta.get("rounds", step))
    if step < rounds and not allow_incomplete:
        raise IncompleteModelError(
            f"{tag}: training stopped at round {step} of {rounds} (the run was interrupted): resume it with "
            f"the same launch command, or pass --allow_incomplete to use the round-{step} model"
        )
    selection = "last"
    if step >= rounds and str(config.get("eval", {}).get("select", "last")) == "best_val":
        best, best_meta, best_step = _restore(os.path.join(workdir, "best_val", tag), engine.params_template(config))
        if best is not None:  # none: the run had no validation tiles and scored its last round
            params, step, selection = best, int(best_meta.get("round", best_step)), "best_val"
    shipped = os.path.join(workdir, SHIPPED_MANIFEST)
    if os.path.isfile(shipped):  # an exported model: its checkpoint holds the params its run chose
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            with open(shipped) as f:
                meta = json.load(f)
            step, selection = int(meta["round"]), str(meta["selection"])
    model = LoadedModel(config, params, tag)
    model.round, model.rounds, model.selection = int(step), rounds, selection
    return model


def _restore(directory: str, template) -> tuple[Any, dict, int]:
    """``checkpointing.restore_params``, with a damaged checkpoint (a truncated or missing file, a tree
    that is not this config's model) reported as one ValueError naming its folder, not orbax's traceback."""
    hooks = sys.excepthook, sys.unraisablehook
    _quiet_restore_leftovers()
    try:
        restored = checkpointing.restore_params(directory, template)
    except MemoryError:
        sys.excepthook, sys.unraisablehook = hooks
        raise
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for a damaged checkpoint
        # The hooks stay: the failed restore's coroutines fail again when collected, at exit.
        first = (str(e).strip().splitlines() or [""])[0].split(" See full TensorStore details")[0][:200]
        raise ValueError(
            f"the checkpoint in {directory} cannot be read ({type(e).__name__}: {first}): the workdir is damaged "
            "or incomplete; copy it again, or re-export or retrain the model"
        ) from None
    sys.excepthook, sys.unraisablehook = hooks
    return restored


def _closed_loop_callback(exc: BaseException | None) -> bool:
    """A tensorstore callback into orbax's event loop after it closed (printed from a C++ thread)."""
    return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)


def _orbax_leftover(unraisable) -> bool:
    """An orbax read coroutine of a failed restore, raising again as it is collected."""
    exc = unraisable.exc_value
    if _closed_loop_callback(exc):
        return True
    if exc is None or not asyncio.iscoroutine(unraisable.object):
        return False
    return any("orbax" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


def _quiet_restore_leftovers() -> None:
    """A restore that fails leaves orbax's other reads behind: tensorstore callbacks into a closed event
    loop and read coroutines that raise again when collected. Python prints each as a traceback (through
    these hooks), dozens of them around the one-line error; those, and only those, are dropped (an uncaught
    exception of the program itself is printed as always)."""
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def quiet_excepthook(kind, value, tb):
        if not _closed_loop_callback(value):
            excepthook(kind, value, tb)

    def quiet_unraisablehook(unraisable):
        if not _orbax_leftover(unraisable):
            unraisablehook(unraisable)

    sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook


PREFERENCE = ("fedtransfer_gen", "fedtransfer", "fedtransfer_fourier", "fedavg", "fedprox", "centralized")


def _method_scores(summary: dict) -> tuple[dict[str, float], dict[str, float]]:
    """``(validation, test_ari)``: each method's post-processing validation objective
    (``methods.<m>.postprocessed.validation_objective.chosen``) and its mean test ARI (``methods.<m>.mean.ari``)."""
    validation, ari = {}, {}
    for m, entry in (summary.get("methods") or {}).items():
        if not isinstance(entry, dict):
            continue
        v = ((entry.get("postprocessed") or {}).get("validation_objective") or {}).get("chosen")
        if isinstance(v, (int, float)) and np.isfinite(v):
            validation[m] = float(v)
        a = (entry.get("mean") or {}).get("ari")
        if isinstance(a, (int, float)) and np.isfinite(a):
            ari[m] = float(a)
    return validation, ari


def choose_default_method(workdir: str) -> tuple[str, str]:
    """``(method, reason)``: the method predict/evaluate use when ``--method`` is not given.

    The best of the workdir's trained methods by its own validation: the post-processing validation
    objective of each method in ``summary.json`` (mean of boundary F1, ARI and grain-count ratio on the
    validation tiles); where no method has one, the fixed order ``PREFERENCE``. The test metrics in
    ``summary.json`` are never used: picking a model by its test score would make that score optimistic. Only methods with a checkpoint folder and one model count: a shared
    model, or a local method that trained a single client (with several, it needs ``--client``, so it is
    never a default). ``reason`` says which rule picked it, with the runner-up.
    """
    if not os.path.isdir(workdir):
        what = "a file, not a folder" if os.path.exists(workdir) else "not found"
        raise FileNotFoundError(f"--workdir {workdir} is {what}: name a workdir written by launch.py")
    base = os.path.join(workdir, "checkpoints")
    eligible = {m for m in segmenter_methods(workdir) if not is_local(workdir, m) or sole_client(workdir, m)}
    summary = {}
    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            summary = {}
    validation, ari = _method_scores(summary if isinstance(summary, dict) else {})
    del ari  # test scores: never a selection criterion
    for scores, what in ((validation, "post-processing validation objective"),):
        ranked = sorted((m for m in scores if m in eligible), key=lambda m: -scores[m])
        if ranked:
            best = ranked[0]
            others = ", ".join(f"{m} {scores[m]:.3f}" for m in ranked[1:4])
            reason = f"best {what}: {scores[best]:.3f}" + (f" (next: {others})" if others else "")
            return best, reason
    for m in PREFERENCE:
        if m in eligible:
            return m, "no validation scores in summary.json: first of " + " > ".join(PREFERENCE)
    if eligible:
        m = sorted(eligible)[0]
        return m, "no validation scores in summary.json: the only trained method" if len(eligible) == 1 else (
            "no validation scores in summary.json: first trained method by name"
        )
    raise FileNotFoundError(
        f"no trained model found under {base}: is --workdir {workdir} a workdir written by launch.py?"
    )


def default_method(workdir: str) -> str:
    """The method used when ``--method`` is not given (``choose_default_method`` without the reason)."""
    return choose_default_method(workdir)[0]


IMAGE_SUFFIXES = image_files.IMAGE_SUFFIXES


def scan_images(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """``(images, skipped)`` of a file or folder: the micrographs to read, sorted, and every other entry
    of the folder with the reason it is not read (hidden files such as macOS ``._x.png`` companions,
    sub-folders, other suffixes, a second name of an image already listed) and its ``kind`` ('hidden',
    'folder', 'special', 'suffix', 'duplicate', 'side_file': a Hitachi/JEOL ``IMAGE.txt`` beside an image,
    read for its pixel size); a file without a suffix (or with a numbered one) that is an image by its
    content also has ``content`` ('TIFF', 'PNG', 'JPEG', 'BMP'). A single file is taken as given,
    whatever its suffix.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: a folder without images (names the folder and the suffixes looked for), or ``path``
        is neither a regular file nor a folder (a FIFO is never opened: reading it would block).
    """
    if os.path.isfile(path):
        return [path], []
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--images {path} is not a regular file or a folder (a FIFO, socket or device?)")
    if os.path.islink(path) and not os.path.exists(path):
        raise FileNotFoundError(f"--images {image_files.broken_link_message(path)}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--images {path}: no such image file or folder")
    names = sorted(os.listdir(path))
    real = {name: os.path.realpath(os.path.join(path, name)) for name in names}
    # Names of one file (a link beside its target, or two links): it is measured once, under the name that
    # is not a link (else the first), so moving or deleting a link never changes what was measured.
    kept: dict[str, str] = {}
    for name in names:
        full = os.path.join(path, name)
        if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES) or not os.path.isfile(full):
            continue
        first = kept.get(real[name])
        if first is None or (os.path.islink(os.path.join(path, first)) and not os.path.islink(full)):
            kept[real[name]] = name
    images, skipped = [], []
    for name in names:
        full = os.path.join(path, name)
        if kept.get(real[name], name) != name:
            kind, reason = "duplicate", f"the same file as {kept[real[name]]}, measured once"
        elif name.startswith("."):
            kind, reason = "hidden", "hidden file"
        elif os.path.isdir(full):
            kind, reason = "folder", "folder (sub-folders are not searched)"
        elif os.path.exists(full) and not os.path.isfile(full):  # A FIFO x.png would block forever.
            kind, reason = "special", "not a regular file (FIFO, socket or device): never opened"
        elif not name.lower().endswith(IMAGE_SUFFIXES):
            kind, reason = "suffix", f"not an image suffix ({', '.join(IMAGE_SUFFIXES)})"
            ext = os.path.splitext(name)[1][1:]
            # A micrograph saved without a suffix (or a numbered one, scan.001): say how to have it read. Not
            # for other suffixes: a camera raw (.nef, .dng) or a slide scan (.svs) is a TIFF inside, not a
            # micrograph to rename.
            content = image_files.format_by_content(full) if not ext or ext.isdigit() else None
            if content is not None:
                reason = f"a {content} image without an image suffix: not read; name it {name}{image_files.SUFFIX_OF[content]}"
                skipped.append({"file": full, "reason": reason, "kind": kind, "content": content})
                continue
        else:
            images.append(full)
            continue
        skipped.append({"file": full, "reason": reason, "kind": kind})
    stems = {os.path.splitext(os.path.basename(i))[0]: os.path.basename(i) for i in images}
    for entry in skipped:
        stem, suffix = os.path.splitext(os.path.basename(entry["file"]))
        if entry["kind"] != "suffix" or suffix not in (".txt", ".TXT") or stem not in stems:
            continue
        if calibration.is_side_file(entry["file"]):  # Hitachi/JEOL metadata, read by data/calibration.py
            entry.update(kind="side_file", reason=f"metadata beside {stems[stem]}, read for its pixel size")
    if not images:
        unnamed = [e for e in skipped if e.get("content")]
        hint = (
            f" ({os.path.basename(unnamed[0]['file'])} is a {unnamed[0]['content']} without an image suffix: add one)"
            if unnamed else ""
        )
        raise ValueError(f"--images {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder{hint}")
    return images, skipped


def list_images(path: str) -> list[str]:
    """The micrographs of a file or folder, sorted (``scan_images`` without the skipped entries)."""
    return scan_images(path)[0]


# ---------------------------------------------------------------------------------- the shipped model
# A trained model that ships inside the package is a minimal workdir: config.json, one method's params as
# checkpoints/<method>/<rounds>, its post-processing choice (postprocess/<method>.json), the grain size it
# was trained on (trained_grain_size.json) and shipped.json (where it came from, what it scored). So every
# workdir path (load_model, choose_default_method, --scale auto, the post-processing choice) reads it as it
# reads a run's workdir, and `predict` without --workdir uses it.
SHIPPED_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
SHIPPED_DEFAULT = "grains"
SHIPPED_MANIFEST = "shipped.json"


def shipped_workdir(name: str = SHIPPED_DEFAULT, root: str | None = None) -> str:
    """The folder of the model shipped as `name`; FileNotFoundError (a user-fixable message) when absent."""
    path = os.path.join(root or SHIPPED_ROOT, name)
    if not os.path.isfile(os.path.join(path, SHIPPED_MANIFEST)):
        raise FileNotFoundError(
            f"no --workdir given and this copy of fedtransfer_jax ships no trained model ({path} has no "
            f"{SHIPPED_MANIFEST}): pass --workdir of a launch.py run, or train the shipped model with "
            "experiments/pretrained.py and export it with `python -m fedtransfer_jax.export_model` (docs/MODEL.md)"
        )
    return path


def check_new_folder(dest: str, tool: str, *, parent_must_exist: bool = True) -> None:
    """`--dest` names a new folder (not even a dangling link: the final rename would replace it), in a folder
    that exists unless ``parent_must_exist`` is False; ``tool`` ('export', 'calibrate') is named."""
    if not str(dest).strip():
        raise ValueError("--dest is empty: name the new folder to write")
    if os.path.lexists(dest):
        what = "is a dangling link" if os.path.islink(dest) and not os.path.exists(dest) else "exists"
        raise FileExistsError(f"--dest {dest} {what}: {tool} writes a new folder (remove it or pick another)")
    parent = os.path.dirname(os.path.abspath(dest))
    if parent_must_exist and not os.path.isdir(parent):
        raise FileNotFoundError(f"--dest {dest}: folder {parent} does not exist")
    if os.path.isdir(parent):  # before the slow part: a read-only place fails now, naming the flag
        try:
            os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".write-check-"))
        except OSError as e:
            raise PermissionError(f"--dest {dest}: cannot write into {parent} ({e.strerror})") from None


def export_model(workdir: str, method: str, dest: str, *, note: str = "") -> dict:
    """Writes `method`'s model from `workdir` as a shipped model at `dest` (a new folder: an existing one is
    never overwritten): the params `load_model` gives (the validation-chosen ones where the run chose),
    as a last-round checkpoint under a config whose `eval.select` is 'last'. Returns shipped.json."""
    from fedtransfer_jax.runs import grain_size, postprocess_choice  # noqa: PLC0415
    from fedtransfer_jax.runtime import io_utils  # noqa: PLC0415

    check_new_folder(dest, "export", parent_must_exist=False)  # a new model store is made with its first model
    if is_local(workdir, method):
        if sole_client(workdir, method):
            raise ValueError(
                f"--method {method!r} is one lab's fine-tuned model: use it with predict --workdir {workdir}; "
                "export_model ships a shared model"
            )
        raise ValueError(f"--method {method!r} has one model per client: export a shared model")
    try:
        model = load_model(workdir, method)
    except IncompleteModelError as e:
        raise ValueError(f"--method {method}: {e.args[0].split(' (the run')[0]}; finish that run first") from None
    config = config_from_workdir(workdir)
    if "eval" not in config:
        config.eval = ml_collections.ConfigDict()
    config.eval.select = "last"  # the params below are the chosen ones
    summary = {}
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(workdir, "summary.json")) as f:
            summary = json.load(f)
    entry = (summary.get("methods") or {}).get(method) or {}
    manifest = {
        "name": os.path.basename(os.path.normpath(dest)),
        "method": method,
        "from_workdir": os.path.abspath(workdir),
        "round": model.round,
        "rounds": model.rounds,
        "selection": model.selection,
        "config_name": str(config.get("name", "")),
        "test_metrics": {k: entry[k] for k in ("mean", "unseen", "whole_images") if k in entry},
        "note": note,
    }
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(os.path.normpath(dest)) + ".partial-")
    try:
        os.chmod(tmp, 0o777 & ~io_utils.current_umask())  # mkdtemp's 0700 would become the model folder's
        io_utils.write_json_atomic(os.path.join(tmp, "config.json"), config.to_dict())
        checkpointing.save_params(
            os.path.join(tmp, "checkpoints", method), model.rounds, model.params, {"rounds": model.rounds}
        )
        choice = postprocess_choice.choice_path(workdir, method)
        if os.path.isfile(choice):
            target = postprocess_choice.choice_path(tmp, method)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(choice, target)
        px, why = grain_size.trained_grain_size(workdir, config)
        grain_size.record(tmp, px, why)
        io_utils.write_json_atomic(
            os.path.join(tmp, "summary.json"), {"methods": {method: {k: entry[k] for k in ("postprocessed",) if k in entry}}}
        )
        io_utils.write_json_atomic(os.path.join(tmp, SHIPPED_MANIFEST), manifest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _model_keys(config) -> dict:
    """What makes two U-Nets the same network (params of equal shapes can still differ in meaning:
    GroupNorm's groups)."""
    m = config.get("model", {}) if hasattr(config, "get") else {}
    return {k: (list(m[k]) if isinstance(m.get(k), (list, tuple)) else m.get(k)) for k in ("name", "features", "groups") if k in m}


def init_from_folder(init_from: str) -> str:
    """The folder config key init_from names: the shipped model's for 'shipped', else the path (a leading ~
    expanded); ValueError naming the key when that is not a folder."""
    workdir = shipped_workdir() if init_from == "shipped" else os.path.expanduser(init_from)
    if not os.path.isdir(workdir):
        raise ValueError(f"config key init_from: {init_from!r} is neither 'shipped' nor a workdir folder")
    return workdir


def check_init_from(config: ml_collections.ConfigDict) -> None:
    """A run that starts from a trained model names an existing folder: checked by launch before the workdir
    is made, so a typo costs no data build (minutes for a folder client). Left out of validate_config, like
    check_data_folder: a config can name a model that an earlier step of its study will train. 'shipped' is
    left to the load (initial_params), as before."""
    init_from = str(config.get("init_from", "") or "")
    if init_from and init_from != "shipped":
        init_from_folder(init_from)


def initial_params(init_from: str, method: str, template: Any, template_config: Any = None) -> tuple[Any, dict]:
    """`(params, provenance)` a run starts from instead of its random init (config keys `init_from`,
    `init_from_method`): 'shipped' (the package's model) or a workdir of an earlier run, its `method`
    (default: its best by validation). The params must have the run's shapes (same model.features);
    ValueError otherwise, naming the key."""
    template_config = template_config if template_config is not None else {}
    workdir = init_from_folder(init_from)
    if not method:
        method, _ = choose_default_method(workdir)
    try:
        model = load_model(workdir, method)
    except IncompleteModelError as e:
        raise ValueError(f"config key init_from: {e.args[0].split(' (the run')[0]}; finish that run first") from None
    except FileNotFoundError as e:
        raise ValueError(f"config key init_from: {e}") from None
    if _model_keys(template_config) and _model_keys(model.config) != _model_keys(template_config):
        raise ValueError(
            f"config key init_from: the model in {workdir} ({method}) has model keys {_model_keys(model.config)}, "
            f"this run {_model_keys(template_config)}: set the run's model.* keys to match"
        )
    got = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), model.params)
    want = jax.tree_util.tree_map(lambda x: tuple(x.shape), template)
    if jax.tree_util.tree_structure(got) != jax.tree_util.tree_structure(want) or got != want:
        raise ValueError(
            f"config key init_from: the model in {workdir} ({method}, model.features "
            f"{tuple(model.config.model.features)}) does not have this run's shapes: set "
            f"--config.model.features={tuple(model.config.model.features)} (and its model keys) to match"
        )
    params = jax.tree_util.tree_map(lambda x, t: np.asarray(x, dtype=t.dtype), model.params, template)
    # Allowed to differ (a raw model can be fine-tuned on stretched images), but written down: the run's
    # model is fed as *its* config says, not as the initial model was.
    return params, {
        "workdir": os.path.abspath(workdir),
        "method": method,
        "round": model.round,
        "intensity": intensity.mode_of(model),
    }

