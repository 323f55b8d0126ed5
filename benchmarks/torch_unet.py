"""PyTorch twin of `fedtransfer_jax.models.UNet` and a sequential FedAvg round: the eager baseline.

Same layers as the flax model (2x(conv3x3 -> GroupNorm -> ReLU) blocks, 2x2 max-pool, nearest upsample +
conv3x3, concat skip, 1x1 head), same loss (boundary-weighted cross-entropy + soft Dice on the boundary
class), same FedAvg round (fresh client optimizer, S local steps of batch B over one local epoch, weighted
mean of deltas, server SGD lr 1). `load_flax_params` copies a flax params tree in, so the tests can check
that both models compute the same function; the round itself is what most PyTorch FL code does: a Python
loop over clients, one at a time.

Importing this module requires torch; `round_speed.py` imports it only when torch is installed.
"""

from __future__ import annotations

import copy
import os
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedtransfer_jax.models.unet import _groups  # the same GroupNorm group rule as the flax U-Net

GN_EPS = 1e-6  # flax.linen.GroupNorm's default epsilon (torch's is 1e-5)


class ConvBlock(nn.Module):
    """Two (3x3 conv -> GroupNorm -> ReLU) layers (flax: ConvBlock with Conv_0/GroupNorm_0/Conv_1/GroupNorm_1)."""

    def __init__(self, cin: int, features: int, groups: int = 8):
        super().__init__()
        g = _groups(features, groups)
        self.conv0 = nn.Conv2d(cin, features, 3, padding=1)
        self.norm0 = nn.GroupNorm(g, features, eps=GN_EPS)
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.norm1 = nn.GroupNorm(g, features, eps=GN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm0(self.conv0(x)))
        return F.relu(self.norm1(self.conv1(x)))


class TorchUNet(nn.Module):
    """NCHW U-Net returning logits [B, num_classes, H, W]."""

    def __init__(
        self,
        features: Sequence[int] = (16, 32, 64),
        num_classes: int = 2,
        groups: int = 8,
        in_channels: int = 3,
    ):
        super().__init__()
        self.features = tuple(features)
        self.down = nn.ModuleList()
        c = in_channels
        for f in self.features:
            self.down.append(ConvBlock(c, f, groups))
            c = f
        # Decoder modules indexed by level i (like flax's up_proj_i / up_i), built from the deepest level up.
        self.up_proj = nn.ModuleList([None] * (len(self.features) - 1))
        self.up = nn.ModuleList([None] * (len(self.features) - 1))
        for i in reversed(range(len(self.features) - 1)):
            f = self.features[i]
            self.up_proj[i] = nn.Conv2d(c, f, 3, padding=1)
            self.up[i] = ConvBlock(2 * f, f, groups)
            c = f
        self.head = nn.Conv2d(c, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.features) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for i in reversed(range(len(self.features) - 1)):
            x = self.up_proj[i](F.interpolate(x, scale_factor=2, mode="nearest"))
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        return self.head(x)


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    boundary_weight: float = 3.0,
    dice_weight: float = 1.0,
    eps: float = 1.0,
) -> torch.Tensor:
    """Torch port of `models.losses.segmentation_loss` (logits NCHW, labels [B,H,W] long, mask [B])."""
    mask = mask.float()
    n = mask.sum().clamp_min(1.0)
    pix_w = torch.where(labels == 1, boundary_weight, 1.0)
    ce = F.cross_entropy(logits, labels, reduction="none")
    ce_per_ex = (ce * pix_w).sum(dim=(1, 2)) / pix_w.sum(dim=(1, 2))
    ce_loss = (ce_per_ex * mask).sum() / n
    p = torch.softmax(logits, dim=1)[:, 1]
    t = (labels == 1).float()
    inter = (p * t).sum(dim=(1, 2))
    dice = (2 * inter + eps) / (p.sum(dim=(1, 2)) + t.sum(dim=(1, 2)) + eps)
    dice_loss = ((1.0 - dice) * mask).sum() / n
    return ce_loss + dice_weight * dice_loss


def load_flax_params(model: TorchUNet, params) -> None:
    """Copy a flax `UNet` params tree (HWIO kernels, GroupNorm scale/bias) into `model` in place."""

    def conv(dst: nn.Conv2d, src) -> None:
        dst.weight.copy_(torch.from_numpy(np.asarray(src["kernel"]).transpose(3, 2, 0, 1).copy()))
        dst.bias.copy_(torch.from_numpy(np.asarray(src["bias"]).copy()))

    def norm(dst: nn.GroupNorm, src) -> None:
        dst.weight.copy_(torch.from_numpy(np.asarray(src["scale"]).copy()))
        dst.bias.copy_(torch.from_numpy(np.asarray(src["bias"]).copy()))

    def block(dst: ConvBlock, src) -> None:
        conv(dst.conv0, src["Conv_0"]), norm(dst.norm0, src["GroupNorm_0"])
        conv(dst.conv1, src["Conv_1"]), norm(dst.norm1, src["GroupNorm_1"])

    with torch.no_grad():
        for i, b in enumerate(model.down):
            block(b, params[f"down_{i}"])
        for i in range(len(model.features) - 1):
            conv(model.up_proj[i], params[f"up_proj_{i}"])
            block(model.up[i], params[f"up_{i}"])
        conv(model.head, params["head"])


def _make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        # optax.adam defaults: b1=0.9, b2=0.999, eps=1e-8 (same as torch).
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"--optimizer: unknown client optimizer {name!r} for torch; choose sgd or adam")


def make_fedavg_round(
    images: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    *,
    features: Sequence[int],
    local_steps: int,
    batch_size: int,
    optimizer: str,
    lr: float,
    seed: int,
    boundary_weight: float = 3.0,
    dice_weight: float = 1.0,
    num_threads: int | None = None,
    init_params=None,
    device: str | None = None,
) -> tuple[Callable[[], float], TorchUNet]:
    """Returns (`run_round() -> mean client loss`, global model): sequential FedAvg over all C clients.

    Each call trains every client for `local_steps` steps of `batch_size` (a fresh optimizer from the
    global weights), averages the deltas weighted by the client's real-example count and applies them
    (server SGD, lr 1). Batches follow a per-(seed, round, client) permutation of the real examples.
    `init_params` (a flax `UNet` params tree) sets the initial global weights, else torch's default init.
    `device`: 'cuda' when torch sees a GPU, else 'cpu' (default); the client data live there.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3))).to(device)  # [C,N,3,H,W]
    y_all = torch.from_numpy(labels.astype(np.int64)).to(device)
    m_all = torch.from_numpy(mask).to(device)
    num_clients = x_all.shape[0]
    global_model = TorchUNet(features)
    if init_params is not None:
        load_flax_params(global_model, init_params)
    global_model.to(device)
    local_model = copy.deepcopy(global_model)
    state = {"round": 0}

    def run_round() -> float:
        rnd = state["round"]
        global_sd = {k: v.detach().clone() for k, v in global_model.state_dict().items()}
        sum_delta = {k: torch.zeros_like(v) for k, v in global_sd.items()}
        total_w, loss_sum = 0.0, 0.0
        for c in range(num_clients):
            real = np.flatnonzero(mask[c])
            w = float(len(real))
            if w == 0:
                continue
            order = real[np.random.default_rng([seed, rnd, c]).permutation(len(real))]
            local_model.load_state_dict(global_sd)
            opt = _make_optimizer(optimizer, local_model.parameters(), lr)
            losses = []
            for s in range(local_steps):
                idx = torch.from_numpy(order[(np.arange(batch_size) + s * batch_size) % len(order)]).to(
                    device
                )
                opt.zero_grad(set_to_none=True)
                loss = segmentation_loss(
                    local_model(x_all[c, idx]),
                    y_all[c, idx],
                    m_all[c, idx],
                    boundary_weight=boundary_weight,
                    dice_weight=dice_weight,
                )
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            with torch.no_grad():
                for k, v in local_model.state_dict().items():
                    sum_delta[k] += w * (v - global_sd[k])
            total_w += w
            loss_sum += w * float(torch.stack(losses).mean())
        with torch.no_grad():
            new_sd = {k: global_sd[k] + sum_delta[k] / max(total_w, 1e-12) for k in global_sd}
            global_model.load_state_dict(new_sd)
        state["round"] += 1
        return loss_sum / max(total_w, 1e-12)

    return run_round, global_model
