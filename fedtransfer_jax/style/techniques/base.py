"""The one interface every style technique implements, the generic style bank, and in-jit batch mixing.

A style technique is a ``StyleTechnique`` of pure functions. The trainer drives every method the same way:

    shared = method.init_shared(key, tile)                 # None: nothing to train federatedly
    if method.shared_loss is not None:                      # train `shared` with the FedAvg round engine
        shared = <federated training of method.shared_loss on every client's own (image, label) batches>
    msg_c = method.client_message(shared, images_c, labels_c, mask_c, key_c)   # on client c, K examples
    ... msg_c crosses the privacy boundary (fl.boundary.send_to_server) ...
    bank = method.build_bank([msg_0, msg_1, ...])          # server, host side; broadcast to every client
    batch = mix_batch(method, shared, bank, batch, client_id, key, mix_prob)   # inside the jitted step

``client_message`` returns per-example *statistics* (never an array with the spatial shape of an image or
label map, ``check_message`` enforces it); ``render`` re-renders a batch in the style of given target
clients and keeps the geometry, so labels stay valid.

Generic bank (used by every built-in method): ``StyleBank(styles, valid)`` where ``styles`` is a dict of
``[C, K, ...]`` arrays (client c's k-th shared style) and ``valid [C, K]`` marks real slots (clients may
share different numbers of styles; padding slots are never drawn).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.data.batching import map_in_batches

Array = jax.Array
PyTree = Any
LossFn = Callable[[PyTree, dict, chex.PRNGKey], tuple[jax.Array, dict]]


class StyleTechnique(NamedTuple):
    """A style-sharing technique (see the module docstring for the call order).

    Optional fields: ``shared_trainable`` (optional ``params -> bool pytree`` mask of
    the shared parameters that federated training may change, for ``optax.masked``; None = all),
    ``info`` (static, JSON-able description for the summary) and ``prior_bank`` (``(key, k) -> StyleBank``
    of one virtual lab holding k styles drawn from a broad prior over the technique's imaging parameters,
    built from no lab's data: the random-style control, ``style_targets='random'``).
    """

    name: str
    init_shared: Callable[[chex.PRNGKey, int], PyTree | None]
    shared_loss: LossFn | None
    client_message: Callable[[PyTree, Array, Array, Array, chex.PRNGKey], dict]
    build_bank: Callable[[list[dict]], PyTree]
    render: Callable[[PyTree, PyTree, Array, Array, Array, chex.PRNGKey], Array]
    shared_trainable: Callable[[PyTree], PyTree] | None = None
    info: Mapping[str, Any] | None = None
    prior_bank: Callable[[chex.PRNGKey, int], "StyleBank"] | None = None


class StyleBank(NamedTuple):
    """Every client's shared styles: ``styles`` dict of ``[C, K, ...]`` arrays, ``valid [C, K]`` bool."""

    styles: dict
    valid: Array

    @property
    def num_clients(self) -> int:
        return self.valid.shape[0]


def check_message(message: Mapping[str, Any], image_hw: tuple[int, int]) -> None:
    """Raise if any array of a client message has an image's / label map's spatial shape ``(H, W)`` in
    consecutive axes: style messages are statistics, never pictures."""
    h, w = image_hw
    for name, v in message.items():
        shape = tuple(np.shape(v))
        for i in range(len(shape) - 1):
            if shape[i] == h and shape[i + 1] == w:
                raise ValueError(f"client message '{name}' has image-shaped axes {shape} (H, W = {h}, {w})")


def stack_messages(messages: Sequence[Mapping[str, Any]]) -> StyleBank:
    """Server side (host, numpy): stack per-client dicts of ``[k_c, ...]`` arrays into a ``StyleBank``
    padded to the largest ``k_c``. A message may carry ``valid [k_c]`` (default all True); every client
    must send the same keys with the same per-style shapes."""
    if not messages:
        raise ValueError("stack_messages: no client messages")
    keys = sorted(k for k in messages[0] if k != "valid")
    if not keys:
        raise ValueError("stack_messages: messages hold no style arrays")
    for c, m in enumerate(messages):
        if sorted(k for k in m if k != "valid") != keys:
            raise KeyError(f"stack_messages: client {c} sends keys {sorted(m)}, client 0 sends {keys}")
    counts = []
    for c, m in enumerate(messages):
        ks = {np.shape(m[k])[0] for k in keys}
        if "valid" in m:
            ks.add(np.shape(m["valid"])[0])
        if len(ks) != 1:
            raise ValueError(f"stack_messages: client {c} has inconsistent style counts {ks}")
        counts.append(ks.pop())
    n, k_max = len(messages), max(max(counts), 1)
    styles = {}
    for k in keys:
        tails = {tuple(np.shape(m[k])[1:]) for m in messages}
        if len(tails) != 1:
            raise ValueError(f"stack_messages: '{k}' has different per-style shapes across clients: {tails}")
        arr = np.zeros((n, k_max, *tails.pop()), np.float32)
        for c, m in enumerate(messages):
            arr[c, : counts[c]] = np.asarray(m[k], np.float32)
        styles[k] = jnp.asarray(arr)
    valid = np.zeros((n, k_max), bool)
    for c, m in enumerate(messages):
        valid[c, : counts[c]] = np.asarray(m["valid"], bool) if "valid" in m else True
    return StyleBank(styles, jnp.asarray(valid))


def pick_styles(bank: StyleBank, targets: Array, key: chex.PRNGKey) -> dict:
    """For each example, one uniformly drawn *valid* style of its target client: dict of ``[B, ...]``.

    A target with no valid slot falls back to its slot 0 (``mix_batch`` never asks for such a target)."""
    k = bank.valid.shape[1]
    logits = jnp.where(bank.valid[targets], 0.0, -jnp.inf)  # [B, K]
    logits = jnp.where(jnp.any(bank.valid[targets], -1, keepdims=True), logits, 0.0)
    slots = jax.random.categorical(key, logits, axis=-1) if k > 1 else jnp.zeros(targets.shape, jnp.int32)
    return jax.tree_util.tree_map(lambda a: a[targets, slots], bank.styles)


def foreign_targets(valid: Array, client_id: Array, n: int, key: chex.PRNGKey) -> tuple[Array, Array]:
    """``n`` target clients drawn uniformly among the clients other than ``client_id`` that share at least
    one valid style; returns ``(targets [n] int32, has_foreign)`` (targets = client_id when none)."""
    c = valid.shape[0]
    ok = jnp.any(valid, axis=1) & (jnp.arange(c) != client_id)
    has = jnp.any(ok)
    logits = jnp.where(ok, 0.0, -jnp.inf)
    logits = jnp.where(has, logits, jnp.where(jnp.arange(c) == client_id, 0.0, -jnp.inf))
    return jax.random.categorical(key, logits, shape=(n,)).astype(jnp.int32), has


# Whose style a client renders its own labels in: other labs' (FedTransfer) or its own (the control that
# separates style *sharing* from the augmentation of re-rendering, docs/PROTOCOL.md "Controls").
TARGET_MODES = ("foreign", "own", "random")


def check_targets_mode(mode: str) -> None:
    if mode not in TARGET_MODES:
        raise ValueError(f"style targets: unknown mode {mode!r}; choose from {TARGET_MODES}")


def own_targets(valid: Array, client_id: Array, n: int) -> tuple[Array, Array]:
    """The control to ``foreign_targets``: ``n`` times the client itself, ``(targets [n], has_own_style)``.
    Rendering a client's labels in its *own* fitted style is re-rendering as augmentation, with no other
    lab's style involved."""
    return jnp.full((n,), client_id, jnp.int32), jnp.any(valid[client_id])


def random_targets(valid: Array, n: int) -> tuple[Array, Array]:
    """The second control: the bank is a technique's ``prior_bank`` (one virtual lab of styles drawn from a
    broad prior), so every target is that lab: ``(zeros [n], has_prior_style)``."""
    return jnp.zeros((n,), jnp.int32), jnp.any(valid[0])


def draw_targets(valid: Array, client_id: Array, n: int, key: chex.PRNGKey, mode: str = "foreign"):
    """``foreign_targets`` (FedTransfer), ``own_targets`` or ``random_targets`` (the controls), by ``mode``."""
    check_targets_mode(mode)
    if mode == "foreign":
        return foreign_targets(valid, client_id, n, key)
    if mode == "random":
        return random_targets(valid, n)
    return own_targets(valid, client_id, n)


def mix_batch(
    method: StyleTechnique,
    shared: PyTree,
    bank: PyTree,
    batch: dict,
    client_id: Array | int,
    key: chex.PRNGKey,
    mix_prob: float,
    targets_mode: str = "foreign",
    post_render: Callable | None = None,
) -> dict:
    """Replace ``round(mix_prob * B)`` random examples of a client's batch by its own images/labels
    rendered in randomly drawn *foreign* labs' styles (labels unchanged; ``targets_mode='own'``: in its own
    styles, the control). Jittable; ``client_id`` may be
    traced (one compiled step for every client under vmap); ``mix_prob`` is static. Only the chosen
    examples are rendered (gather -> render -> scatter), so the cost is proportional to ``mix_prob``.
    With no foreign style in the bank the batch is returned unchanged. ``post_render`` (jittable, ``[n, H, W, C]
    -> same``) is applied to the rendered images: the run's intensity normalisation (data/intensity.py)."""
    if not 0.0 <= float(mix_prob) <= 1.0:
        raise ValueError(f"config key style.mix_prob must be in [0, 1], got {mix_prob}")
    images = batch["images"]
    bsz = images.shape[0]
    n_mix = int(round(float(mix_prob) * bsz))
    if n_mix == 0:
        return batch
    k_pick, k_target, k_render = jax.random.split(key, 3)
    idx = jax.random.permutation(k_pick, bsz)[:n_mix]
    valid = bank.valid if hasattr(bank, "valid") else bank["valid"]
    targets, has_foreign = draw_targets(valid, jnp.asarray(client_id, jnp.int32), n_mix, k_target, targets_mode)
    rendered = method.render(shared, bank, images[idx], batch["labels"][idx], targets, k_render)
    chex.assert_shape(rendered, images[idx].shape)
    if post_render is not None:
        rendered = post_render(rendered)
    rendered = jnp.where(has_foreign, rendered.astype(images.dtype), images[idx])
    return {**batch, "images": images.at[idx].set(rendered)}


def make_batch_transform(
    method: StyleTechnique,
    shared: PyTree,
    bank: PyTree,
    mix_prob: float,
    targets_mode: str = "foreign",
    post_render: Callable | None = None,
) -> Callable:
    """``mix_batch`` as the engine's ``batch_transform(batch, client_id, rng) -> batch``."""
    check_targets_mode(targets_mode)  # fail at set-up, not inside the first jitted step
    return lambda batch, client_id, rng: mix_batch(
        method, shared, bank, batch, client_id, rng, mix_prob, targets_mode, post_render
    )


def render_in_batches(
    method: StyleTechnique,
    shared: PyTree,
    bank: PyTree,
    images: np.ndarray,
    labels: np.ndarray,
    targets: np.ndarray,
    key: chex.PRNGKey,
    batch: int = 16,
    render_fn: Callable | None = None,
) -> np.ndarray:
    """Host helper for checks and figures: ``render`` over any number of examples in batches of one size
    (``batching.map_in_batches``, the last one padded with copies of its first example: one compilation);
    batch i uses ``fold_in(key, i)``."""
    fn = render_fn or jax.jit(method.render)
    if len(images) == 0:
        return np.zeros_like(images)

    def render(ids, x, y, t):
        # Every row carries its batch number (padding copies the first row's): batch i uses fold_in(key, i).
        k = jax.random.fold_in(key, int(ids[0]))
        return fn(shared, bank, jnp.asarray(x, jnp.float32), jnp.asarray(y), jnp.asarray(t, jnp.int32), k)

    ids = np.arange(len(images)) // batch
    return map_in_batches(render, [ids, images, labels, targets], batch, pad="first")


__all__ = [
    "StyleTechnique",
    "StyleBank",
    "check_message",
    "stack_messages",
    "pick_styles",
    "foreign_targets",
    "mix_batch",
    "make_batch_transform",
    "render_in_batches",
]


# ---------------------------------------------------------------------------------------------------------
# Privacy-audit declaration. Every registered technique's module defines
#     make_audit(cfg, *, seed: int, image_size: int) -> StyleAudit
# (``cfg`` as for ``make``) saying how `fedtransfer_jax.privacy.audit` recomputes and attacks the message
# its clients send. The audit iterates over the registry, so a technique without it is rejected with an
# error (``techniques.register`` / ``techniques.get_style_audit``) instead of silently left out of the audit.
# ---------------------------------------------------------------------------------------------------------
class AuditCheck(NamedTuple):
    """A diagnostic the audit runs on each audited client's first victim (image, label, key) -> result,
    reported as ``report[report_key][client]``; ``notes({client: result})`` adds lines to the report's notes
    after the inversion attacks."""

    report_key: str
    run: Callable[[np.ndarray, np.ndarray, chex.PRNGKey], dict]
    notes: Callable[[dict], list]


class StyleAudit(NamedTuple):
    """What the privacy audit needs to attack one style technique's message.

    Attributes:
      message: ``(image [H, W, 3], label [H, W]) -> pytree``: what a client sends for that one tile
        (jittable and vmappable; the property-inference attack regresses tile properties on it).
      statistics: the differentiable function of a candidate image that the inversion attack matches:
        ``statistics(image)`` when ``context`` is None, else ``statistics(image, context)``.
      what_is_sent: ``{report key: description}`` of the message for the report's "What is sent".
      context: None when the message is a function of the image alone (then ``statistics(x)`` is
        ``message(x, label)`` for any label). Otherwise ``(message, guessed label [H, W]) -> context``: the
        message was fitted with the tile's own label map, which the server lacks, so the attacker fits its
        candidate with another tile's label (the attack is reported as ``<name>_inversion``).
      target: ``message -> what statistics must match`` (None: the message itself), e.g. a smooth
        equivalent of non-differentiable message fields.
      score_kwargs: extra ``privacy.audit.scores.score_reconstruction`` arguments for this method's
        reconstructions (Fourier: its window ``beta``; ``twin``, since amplitudes cannot tell an image
        from its 180-degree rotation).
      notes: report notes on the settings the audit recomputed the messages with.
      caveats: report notes on where the recomputed messages may differ from what clients sent (listed
        after every method's ``notes``).
      check: an optional ``AuditCheck`` diagnostic of the attack.
    """

    message: Callable[[Array, Array], PyTree]
    statistics: Callable[..., PyTree]
    what_is_sent: Mapping[str, str]
    context: Callable[[PyTree, Array], PyTree] | None = None
    target: Callable[[PyTree], PyTree] | None = None
    score_kwargs: Mapping[str, Any] | None = None
    notes: tuple = ()
    caveats: tuple = ()
    check: AuditCheck | None = None


def check_style_audit(name: str, audit: Any) -> StyleAudit:
    """``audit`` if it is a usable ``StyleAudit`` of method ``name``; a TypeError naming what is wrong
    otherwise."""
    if not isinstance(audit, StyleAudit):
        raise TypeError(
            f"style technique {name!r}: make_audit must return a StyleAudit, got {type(audit).__name__}"
        )
    for field in ("message", "statistics"):
        if not callable(getattr(audit, field)):
            raise TypeError(f"style technique {name!r}: StyleAudit.{field} must be callable")
    if not audit.what_is_sent:
        raise TypeError(f"style technique {name!r}: StyleAudit.what_is_sent must describe the message")
    return audit


__all__ += ["AuditCheck", "StyleAudit", "check_style_audit"]
