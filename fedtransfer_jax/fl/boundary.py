"""The client -> server boundary, made explicit, and the privacy ledger that watches it.

In the simulation all clients live in one process, so nothing *physically* stops server code from reading
a client's images. This module makes the boundary a single function instead: the aggregation only accepts
`ServerInbox` values, and the only way to make one is `send_to_server`, which records every tensor that
crosses (name, per-client shape, dtype, bytes) in a `PrivacyLedger`. The ledger flags any array whose
trailing dimensions match the spatial shape of a client image or label map.

Shapes are static under `jit`, so the ledger is filled at trace time (what each client sends per round) and
multiplied by the clients actually sampled, which the round function returns, on the host.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np


class ServerInbox(NamedTuple):
    """What the server received from the sampled clients (a leading client axis on every leaf)."""

    payload: Any


@dataclasses.dataclass
class TensorRecord:
    name: str
    shape: tuple[int, ...]  # per client
    dtype: str
    bytes: int  # per client, per send

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PrivacyLedger:
    """Everything that left each client.

    Attributes:
      image_hw: the spatial shape (H, W) of client images/labels; any sent array with these trailing
        (or H, W, C trailing) dimensions is flagged as image-shaped.
      client_names: names by global client id.
    """

    image_hw: tuple[int, int]
    client_names: Sequence[str]
    channel: str = "model_update"
    specs: dict[str, list[TensorRecord]] = dataclasses.field(default_factory=dict)
    bytes_sent_per_client: dict[str, int] = dataclasses.field(default_factory=dict)
    sends_per_client: dict[str, int] = dataclasses.field(default_factory=dict)
    per_round: list[dict] = dataclasses.field(default_factory=list)
    image_shaped_arrays_sent: bool = False
    flagged: list[str] = dataclasses.field(default_factory=list)

    def register(self, channel: str, payload: Any, client_axis: bool, public_template: Any = None) -> None:
        """Record the per-client tensors of one message type (at trace time under jit).

        `public_template` is the message format the server publishes (e.g. a model delta has exactly the
        shapes of the public model parameters). A tensor at the same path with the same shape is part of
        that format and is not flagged even if its shape happens to contain (H, W) (a 3x3x64x64 conv
        kernel on 64x64 tiles); anything else with an image's or label map's spatial shape is.
        """
        public = set()
        if public_template is not None:
            public = {
                (jax.tree_util.keystr(p), tuple(getattr(x, "shape", np.shape(x))))
                for p, x in jax.tree_util.tree_leaves_with_path(public_template)
            }
        records = []
        for path, leaf in jax.tree_util.tree_leaves_with_path(payload):
            shape = tuple(leaf.shape[1:] if client_axis else leaf.shape)
            name = channel + jax.tree_util.keystr(path)
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
            records.append(TensorRecord(name, shape, str(np.dtype(leaf.dtype)), nbytes))
            if (jax.tree_util.keystr(path), shape) not in public and self._image_shaped(shape):
                self.image_shaped_arrays_sent = True
                if name not in self.flagged:  # traced again after a resume: record once
                    self.flagged.append(name)
        self.specs[channel] = records

    def _image_shaped(self, shape: tuple[int, ...]) -> bool:
        h, w = self.image_hw
        return (len(shape) >= 2 and shape[-2:] == (h, w)) or (len(shape) >= 3 and shape[-3:-1] == (h, w))

    def bytes_per_send(self, channel: str) -> int:
        return sum(r.bytes for r in self.specs.get(channel, []))

    def record_round(self, round_idx: int, channel: str, client_ids: Sequence[int]) -> None:
        """Host-side: the clients in `client_ids` each sent one `channel` message in round `round_idx`."""
        per_send = self.bytes_per_send(channel)
        names = [self.client_names[int(c)] for c in client_ids]
        for n in names:
            self.bytes_sent_per_client[n] = self.bytes_sent_per_client.get(n, 0) + per_send
            self.sends_per_client[n] = self.sends_per_client.get(n, 0) + 1
        self.per_round.append(
            {
                "round": int(round_idx),
                "channel": channel,
                "clients": names,
                "bytes_per_client": per_send,
                "bytes_total": per_send * len(names),
            }
        )

    def state_dict(self) -> dict:
        """Everything recorded so far, JSON-able (stored with each checkpoint, so a resumed run's ledger
        covers every round, not only the last process's)."""
        return {
            "specs": {ch: [r.as_dict() for r in recs] for ch, recs in self.specs.items()},
            "bytes_sent_per_client": dict(self.bytes_sent_per_client),
            "sends_per_client": dict(self.sends_per_client),
            "per_round": list(self.per_round),
            "image_shaped_arrays_sent": bool(self.image_shaped_arrays_sent),
            "flagged": list(self.flagged),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replaces what was recorded by `state` (from `state_dict`)."""
        self.specs = {
            ch: [TensorRecord(r["name"], tuple(r["shape"]), r["dtype"], int(r["bytes"])) for r in recs]
            for ch, recs in state.get("specs", {}).items()
        }
        self.bytes_sent_per_client = {k: int(v) for k, v in state.get("bytes_sent_per_client", {}).items()}
        self.sends_per_client = {k: int(v) for k, v in state.get("sends_per_client", {}).items()}
        self.per_round = list(state.get("per_round", []))
        self.image_shaped_arrays_sent = bool(state.get("image_shaped_arrays_sent", False))
        self.flagged = list(state.get("flagged", []))

    def summary(self) -> dict:
        return {
            "bytes_sent_per_client": {n: self.bytes_sent_per_client.get(n, 0) for n in self.client_names},
            "bytes_sent_total": int(sum(self.bytes_sent_per_client.values())),
            "tensors": {ch: [r.as_dict() for r in recs] for ch, recs in self.specs.items()},
            "image_shaped_arrays_sent": bool(self.image_shaped_arrays_sent),
            "flagged_tensors": list(self.flagged),
            "rounds": len(self.per_round),
        }


def send_to_server(
    payload: Any,
    ledger: PrivacyLedger | None,
    channel: str,
    client_axis: bool = True,
    public_template: Any = None,
) -> ServerInbox:
    """The one crossing point from clients to the server. Records `payload` in the ledger
    (`public_template`: the published message format, see `PrivacyLedger.register`)."""
    if ledger is not None:
        ledger.register(channel, payload, client_axis, public_template)
    return ServerInbox(payload)


def send_from_client(
    payload: Any, ledger: PrivacyLedger | None, channel: str, client_id: int, round_idx: int = 0
) -> ServerInbox:
    """Host-side crossing for one client's message (e.g. its style statistics): registers the message's
    tensors and accounts its bytes to that client."""
    inbox = send_to_server(payload, ledger, channel, client_axis=False)
    if ledger is not None:
        ledger.record_round(round_idx, channel, [client_id])
    return inbox
