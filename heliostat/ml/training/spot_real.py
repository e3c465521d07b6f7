"""The real-background spot detector: a small U-Net with a soft-argmax head (PyTorch;
training only).

Input: one 64 x 64 board-normalised target grid (:func:`heliostat.ml.real_input.real_crop`:
``cell / median − 1``; no background model, no sun-off frame). Architecture::

    32²  conv4x4/2 1→c, conv3x3 c→c                          (ReLU after every conv)
    16²  maxpool, conv3x3 c→2c, conv3x3 2c→2c
     8²  maxpool, conv3x3 2c→4c, conv3x3 4c→4c (dilation 2)   receptive field: the target
    16²  up ×2, concat 16² features, conv3x3 6c→2c
    32²  up ×2, concat 32² features and the 2x2-averaged input, conv kxk (3c+1)→c
         (k = ``head_kernel``, 1 or 3),
         conv1x1 c→1: heatmap logits h
    64²  h bilinear up ×2; p = softmax(h) over the grid;
         xy = Σ p · (x_cell, y_cell)          (soft-argmax, half-extent units)
    spot = linear(global max and mean of the 8² features): presence logit

With ``h = log(signal)`` the soft-argmax is exactly the signal-weighted centroid, so the
head can express the centroid a classical detector measures; the network learns which
light is the spot's (the board's panels, seams, bolts and shadow edges are not). The
presence logit says whether there is a spot at all (trained on composites with none).

Loss: mean Euclidean centroid error in pixels of the 256 px image (labels × 127.5) on
samples with a spot, plus 5 × the binary cross-entropy of the presence logit. Augmented
by the 8 symmetries of the square (flips and transposition: the target image's layout
is nearly symmetric, shadows and spots come from any direction).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np


def _torch():
    import torch  # training extra only

    return torch


def build_model(channels: int = 8, crop: int = 64, head_kernel: int = 1):
    """The ``SpotRealNet`` module (``torch.nn.Module``): x (N,1,64,64) -> (xy, spot_logit).

    ``head_kernel``: side of the first 32² head convolution (1 or 3)."""
    torch = _torch()
    nn = torch.nn
    f = torch.nn.functional
    c = channels

    def cbr(i, o, k=3, **kw):
        return [nn.Conv2d(i, o, k, padding=kw.pop("padding", k // 2), **kw), nn.ReLU()]

    class SpotRealNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e1 = nn.Sequential(*cbr(1, c, 4, stride=2, padding=1), *cbr(c, c))
            self.e2 = nn.Sequential(*cbr(c, 2 * c), *cbr(2 * c, 2 * c))
            self.e3 = nn.Sequential(*cbr(2 * c, 4 * c), *cbr(4 * c, 4 * c, padding=2, dilation=2))
            self.d2 = nn.Sequential(*cbr(6 * c, 2 * c))
            self.d1 = nn.Sequential(*cbr(3 * c + 1, c, head_kernel), nn.Conv2d(c, 1, 1))
            self.presence = nn.Linear(8 * c, 1)
            g = (torch.arange(crop, dtype=torch.float32) + 0.5) * (2.0 / crop) - 1.0
            gy, gx = torch.meshgrid(-g, g, indexing="ij")  # row 0 = top = +y
            self.register_buffer("gx", gx.reshape(1, -1))
            self.register_buffer("gy", gy.reshape(1, -1))

        def heatmap_logits(self, x):
            a = self.e1(x)  # 32²
            b = self.e2(f.max_pool2d(a, 2))  # 16²
            z = self.e3(f.max_pool2d(b, 2))  # 8²
            u = f.interpolate(z, scale_factor=2.0, mode="bilinear", align_corners=False)
            d = self.d2(torch.cat([u, b], dim=1))
            u = f.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = self.d1(torch.cat([u, a, f.avg_pool2d(x, 2)], dim=1))
            h = f.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            pooled = torch.cat([z.amax(dim=(2, 3)), z.mean(dim=(2, 3))], dim=1)
            return h, self.presence(pooled)

        def forward(self, x):
            h, spot = self.heatmap_logits(x)
            p = torch.softmax(h.flatten(1), dim=1)
            xy = torch.stack([(p * self.gx).sum(1), (p * self.gy).sum(1)], dim=1)
            return xy, spot

    return SpotRealNet()


def n_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def augment(torch, x, y, g: np.random.Generator):
    """One of the 8 symmetries of the square on a batch and its labels (NaN labels stay
    NaN). Flip of columns: x → −x; of rows: y → −y; transposition: (x, y) → (−y, −x)."""
    y = y.clone()
    if g.random() < 0.5:
        x = x.transpose(2, 3)
        y = torch.stack([-y[:, 1], -y[:, 0]], dim=1)
    if g.random() < 0.5:
        x = torch.flip(x, dims=[3])
        y[:, 0] = -y[:, 0]
    if g.random() < 0.5:
        x = torch.flip(x, dims=[2])
        y[:, 1] = -y[:, 1]
    return x.contiguous(), y


def _loss(torch, model, xb, yb, half_px: float):
    xy, spot = model(xb)
    has = torch.isfinite(yb[:, 0])
    err = torch.linalg.vector_norm((xy[has] - yb[has]) * half_px, dim=1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(spot[:, 0], has.float())
    return err, bce


def train(
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    *,
    epochs: int = 30,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    channels: int = 8,
    head_kernel: int = 1,
    threads: int = 1,
    half_px: float = 127.5,
    time_budget_s: float = math.inf,
    log=print,
) -> tuple[object, dict]:
    """Train on ``x`` (N,1,64,64), ``y`` (N,2; NaN = no spot), validate on ``xv, yv``
    each epoch (mean error [px] and presence accuracy) and keep the best epoch's weights.
    Stops early (and says so in the history) when ``time_budget_s`` is spent."""
    torch = _torch()
    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xvt = torch.from_numpy(xv)
    model = build_model(channels, x.shape[-1], head_kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    spe = math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(epochs * spe, 1), pct_start=0.15
    )
    hist: dict = {"epoch": [], "train_px": [], "val_mean_px": [], "val_median_px": [],
                  "val_presence_acc": [], "wall_s": []}  # fmt: skip
    best = (math.inf, None)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        order = torch.from_numpy(g.permutation(len(x)))
        tot, cnt = 0.0, 0
        for k in range(spe):
            idx = order[k * batch : (k + 1) * batch]
            xb, yb = augment(torch, xt[idx], yt[idx], g)
            err, bce = _loss(torch, model, xb, yb, half_px)
            loss = err.mean() + 5.0 * bce
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(err.detach().sum())
            cnt += len(err)
        model.eval()
        with torch.no_grad():
            xy, spot = model(xvt)
        has = np.isfinite(yv[:, 0])
        ev = np.hypot(*((xy.numpy()[has] - yv[has]) * half_px).T)
        acc = float(np.mean((spot.numpy()[:, 0] > 0) == has))
        hist["epoch"].append(ep + 1)
        hist["train_px"].append(tot / max(cnt, 1))
        hist["val_mean_px"].append(float(ev.mean()))
        hist["val_median_px"].append(float(np.median(ev)))
        hist["val_presence_acc"].append(acc)
        hist["wall_s"].append(time.perf_counter() - t0)
        log(f"epoch {ep + 1}/{epochs}: train {tot / max(cnt, 1):.2f} px, val mean "
            f"{ev.mean():.2f} median {np.median(ev):.2f} px, presence {acc:.3f}, "
            f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        score = float(ev.mean()) + 100.0 * (1.0 - acc)
        if score < best[0]:
            best = (score, {k: v.clone() for k, v in model.state_dict().items()})
            hist["best_epoch"] = ep + 1
        if time.perf_counter() - t0 > time_budget_s:
            hist["stopped_early"] = f"time budget {time_budget_s:.0f} s spent after epoch {ep + 1}"
            log(hist["stopped_early"])
            break
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    return model, hist


def export_onnx(model, path, crop: int = 64) -> None:
    """Write the model as ONNX (opset 17, dynamic batch; input ``crop``, outputs ``xy``
    and ``spot_logit``)."""
    torch = _torch()
    model.eval()
    dummy = torch.zeros(1, 1, crop, crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(path), input_names=["crop"], output_names=["xy", "spot_logit"],
            dynamic_axes={"crop": {0: "n"}, "xy": {0: "n"}, "spot_logit": {0: "n"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
