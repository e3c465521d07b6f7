"""The learned spot detector: a small CNN that masks the spot, then a centroid (PyTorch;
training only).

Architecture (input x: one 64 x 64 normalised target-plane crop, :mod:`heliostat.ml.rectify`)::

    32²: conv4x4/2 1→c, conv3x3 c→2c             (ReLU after every conv)
    16²: maxpool, conv3x3 2c→4c, conv3x3 4c→4c (dilation 2: ~14-cell receptive field)
    32²: bilinear up ×2, concat with the 32² features and the 2x2-averaged input,
         conv1x1 (6c+1)→2c, conv1x1 2c→1, sigmoid: mask m in (0, 1)
    64²: m bilinear up ×2; output = Σ m·x·(x_cell, y_cell) / Σ m·x

The network decides which cells belong to the spot to be measured (second spots,
streaks, glints, the target edge); the position itself is the signal-weighted centroid
under that mask, which is what makes the classical detector precise. The output is the
spot centre in half-extent units (x / (w/2), y / (h/2)), target-plane axes (x right,
y up); it is differentiable end to end. The mask starts nearly closed (bias −3) so that
background noise does not pull early estimates toward the crop centre.

It is kept this small on purpose: it trains in a few minutes on two shared CPU cores.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np


def _torch():
    import torch  # training extra only

    return torch


def build_model(channels: int = 8, crop: int = 64):
    """The :class:`SpotNet` module (``torch.nn.Module``)."""
    torch = _torch()
    nn = torch.nn
    f = torch.nn.functional

    class SpotNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = channels
            self.e1 = nn.Sequential(nn.Conv2d(1, c, 4, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())  # fmt: skip
            self.e2 = nn.Sequential(
                nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(),
                nn.Conv2d(4 * c, 4 * c, 3, padding=2, dilation=2), nn.ReLU(),
            )  # fmt: skip
            self.head = nn.Sequential(nn.Conv2d(6 * c + 1, 2 * c, 1), nn.ReLU(),
                                      nn.Conv2d(2 * c, 1, 1))  # fmt: skip
            # Start with a nearly closed mask (sigmoid(-3) = 0.05): background noise then
            # barely weighs in, and training opens the mask over the spot.
            torch.nn.init.constant_(self.head[2].bias, -3.0)
            g = (torch.arange(crop, dtype=torch.float32) + 0.5) * (2.0 / crop) - 1.0
            gy, gx = torch.meshgrid(-g, g, indexing="ij")  # row 0 = top = +y
            self.register_buffer("gx", gx.reshape(1, -1))
            self.register_buffer("gy", gy.reshape(1, -1))

        def mask(self, x):
            """Membership of each cell in the chosen spot, in (0, 1), full resolution."""
            a = self.e1(x)
            b = self.e2(f.max_pool2d(a, 2))
            up = f.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=False)
            logits = self.head(torch.cat([up, a, f.avg_pool2d(x, 2)], dim=1))
            m = torch.sigmoid(logits)
            return f.interpolate(m, scale_factor=2.0, mode="bilinear", align_corners=False)

        def forward(self, x):
            # Signed signal: clipping the background noise at 0 (relu) would bias the
            # centroid toward the crop centre; zero-mean noise only adds variance.
            w = (self.mask(x) * x).flatten(1)
            s = torch.clamp(w.sum(1), min=1e-3)
            return torch.stack([(w * self.gx).sum(1) / s, (w * self.gy).sum(1) / s], dim=1)

    return SpotNet()


def n_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _augment(torch, x, y, g: np.random.Generator):
    """Random flips of crops and labels (the target and its corner markers are symmetric)."""
    if g.random() < 0.5:
        x = torch.flip(x, dims=[3])
        y = y * torch.tensor([-1.0, 1.0])
    if g.random() < 0.5:
        x = torch.flip(x, dims=[2])
        y = y * torch.tensor([1.0, -1.0])
    return x, y


def train(
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 12,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    channels: int = 8,
    threads: int = 2,
    val_fraction: float = 0.1,
    half_extent_m: float = 3.0,
    log=print,
) -> tuple[object, dict]:
    """Train a :func:`build_model` network on crops ``x`` (N, 1, 64, 64) and labels ``y``
    (N, 2, half-extent units). Returns the model (eval mode) and a history dict.

    Loss: mean Euclidean error in metres (labels × ``half_extent_m``), which is the
    figure reported. Adam with a cosine learning-rate schedule; a held-back validation
    split (``val_fraction``) is scored each epoch and the best epoch's weights are kept.
    """
    torch = _torch()
    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    n = len(x)
    perm = g.permutation(n)
    n_val = max(int(round(val_fraction * n)), 1)
    iv, it = perm[:n_val], perm[n_val:]
    xt, yt = torch.from_numpy(x[it]), torch.from_numpy(y[it])
    xv, yv = torch.from_numpy(x[iv]), torch.from_numpy(y[iv])
    model = build_model(channels, x.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(it) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(epochs * steps_per_epoch, 1), pct_start=0.15
    )
    hist = {"epoch": [], "train_mm": [], "val_mm": [], "wall_s": []}
    best = (math.inf, None)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        order = torch.from_numpy(g.permutation(len(it)))
        tot, cnt = 0.0, 0
        for k in range(steps_per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            xb, yb = _augment(torch, xt[idx], yt[idx], g)
            pred = model(xb)
            err = torch.linalg.vector_norm((pred - yb) * half_extent_m, dim=1)
            loss = err.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            cnt += len(idx)
        model.eval()
        with torch.no_grad():
            ev = torch.linalg.vector_norm((model(xv) - yv) * half_extent_m, dim=1)
        val_mm = float(ev.mean()) * 1e3
        hist["epoch"].append(ep + 1)
        hist["train_mm"].append(tot / cnt * 1e3)
        hist["val_mm"].append(val_mm)
        hist["wall_s"].append(time.perf_counter() - t0)
        log(f"epoch {ep + 1}/{epochs}: train {tot / cnt * 1e3:.1f} mm, val {val_mm:.1f} mm, "
            f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        if val_mm < best[0]:
            best = (val_mm, {k: v.clone() for k, v in model.state_dict().items()})
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    hist["best_val_mm"] = best[0]
    return model, hist


def export_onnx(model, path, crop: int = 64) -> None:
    """Write the model as ONNX (opset 17, dynamic batch; input ``crop``, output ``xy``)."""
    torch = _torch()
    model.eval()
    dummy = torch.zeros(1, 1, crop, crop)
    # The TorchScript exporter (dynamo=False) on purpose: deterministic output and no
    # onnxscript dependency; torch >= 2.9 warns that it is the legacy path.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(torch, model, dummy, path)


def _export(torch, model, dummy, path) -> None:
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["crop"],
        output_names=["xy"],
        dynamic_axes={"crop": {0: "n"}, "xy": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
