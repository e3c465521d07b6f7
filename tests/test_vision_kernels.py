"""The compiled detector kernels against plain numpy/OpenCV versions of the same sums."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from heliostat.vision import _kernels as K


def _grey(a: np.ndarray) -> np.ndarray:
    """BT.601 luma of BGR: OpenCV's fixed-point weights for integer frames (unrounded)."""
    if a.ndim == 2:
        return a.astype(np.float64)
    if a.dtype.kind in "ui":
        return (1868.0 * a[..., 0] + 9617.0 * a[..., 1] + 4899.0 * a[..., 2]) / 16384.0
    return 0.114 * a[..., 0] + 0.587 * a[..., 1] + 0.299 * a[..., 2]


def _frame(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    hi = 255 if dtype == np.uint8 else 4095
    return rng.integers(0, hi + 1, shape).astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "colour", "with_dark", "with_gain"),
    [
        (np.uint16, False, True, False),
        (np.uint16, False, False, True),
        (np.uint8, True, True, True),
        (np.float32, False, False, False),
    ],
)
def test_coarse_pass_matches_numpy(dtype, colour, with_dark, with_gain) -> None:
    rng = np.random.default_rng(7)
    h, w = 200, 260
    shape = (h, w, 3) if colour else (h, w)
    img = _frame(rng, shape, dtype)
    dark = _frame(rng, shape, dtype) // 4 if with_dark else None
    u0, v0, s = 13, 9, 8
    o = s // 2
    nv, nu = (h - v0 - 20 - o + s - 1) // s, (w - u0 - 30 - o + s - 1) // s
    gain = rng.uniform(0.5, 1.5, (nv, nu)).astype(np.float32) if with_gain else None
    on = rng.random((nv, nu)) > 0.1
    full = on & (rng.random((nv, nu)) > 0.1)
    bg_idx = np.flatnonzero(full)[::2]
    pr, pc = np.nonzero(full[:, 1:] & full[:, :-1])
    pair_idx = (pr * nu + pc)[::2]
    sig, sm, vmin, vmax, bg, noise, peak, thr = K.coarse_pass(
        img, dark if dark is not None else K.EMPTY2_U8, dark is not None,
        1 / gain if gain is not None else K.EMPTY2_F32, gain is not None, 64.0,
        u0, v0, s, nv, nu, np.flatnonzero(full), on.astype(np.float32), bg_idx, pair_idx, 6.0,
    )  # fmt: skip
    rows = v0 + o + s * np.arange(nv)
    cols = u0 + o + s * np.arange(nu)
    raw = _grey(img)[np.ix_(rows, cols)]
    ref = raw - (_grey(dark)[np.ix_(rows, cols)] if dark is not None else 64.0)
    if gain is not None:
        ref = ref / gain
    np.testing.assert_allclose(sig, ref, rtol=2e-6, atol=1e-3)
    assert vmin == pytest.approx(raw[full].min(), abs=1e-3)
    assert vmax == pytest.approx(raw[full].max(), abs=1e-3)
    v = sig.ravel()[bg_idx]
    assert bg == pytest.approx(float(np.median(v)), rel=1e-6)
    d = sig.ravel()[pair_idx + 1] - sig.ravel()[pair_idx]
    mad = np.median(np.abs(d - np.median(d))) * 1.482602218505602 / np.sqrt(2.0)
    assert noise == pytest.approx(max(mad, 1 / np.sqrt(12)), rel=1e-5)
    sm_ref = cv2.GaussianBlur(sig - np.float32(bg), (3, 3), 0, borderType=cv2.BORDER_REPLICATE)
    sm_ref *= on
    np.testing.assert_allclose(sm, sm_ref, rtol=1e-5, atol=1e-3 * float(np.abs(sig).max()))
    assert peak == pytest.approx(float(sm.max()))
    assert thr == pytest.approx(6.0 * 0.375 * noise)


@pytest.mark.parametrize(
    ("k", "colour", "masked"), [(1, False, False), (1, True, True), (2, False, True)]
)
def test_fine_sums_match_numpy(k, colour, masked) -> None:
    rng = np.random.default_rng(11)
    H, W = 180, 240  # frame
    u0, v0 = 10, 6  # target box offset in the frame
    bh, bw = 160, 220  # target box
    shape = (H, W, 3) if colour else (H, W)
    img = _frame(rng, shape, np.uint16 if not colour else np.uint8)
    dark = _frame(rng, shape, img.dtype) // 3
    gain = rng.uniform(0.6, 1.4, (bh, bw)).astype(np.float32)
    area = rng.uniform(1e-5, 2e-5, (bh, bw)).astype(np.float32)
    xm = (np.linspace(-2.0, 2.0, bw)[None, :] + 0.01 * rng.random((bh, bw))).astype(np.float32)
    ym = (np.linspace(1.5, -1.5, bh)[:, None] + 0.01 * rng.random((bh, bw))).astype(np.float32)
    ax = (area.astype(np.float64) * xm).astype(np.float32)
    ay = (area.astype(np.float64) * ym).astype(np.float32)
    marker = rng.random((bh, bw)) > 0.95
    gain[marker] = 0.3  # dark ink: out of the noise fit (gain < 0.5)
    edge = rng.random((bh, bw)) > 0.97
    s, o = 8, 4
    nv, nu = (bh - o + s - 1) // s, (bw - o + s - 1) // s
    wu0, wu1, wv0, wv1 = 21, 173, 17, 140
    cu0, cv0 = max((wu0 - o) // s, 0), max((wv0 - o) // s, 0)
    cu1, cv1 = min((wu1 - 1 - o) // s + 1, nu), min((wv1 - 1 - o) // s + 1, nv)
    free_c = (rng.random((cv1 - cv0, cu1 - cu0)) > 0.2).astype(np.uint8)
    bg0, bgu, bgv, uc, vc = 3.0, 0.01, -0.02, 90.0, 80.0
    xref, yref = float(xm[70, 90]), float(ym[70, 90])
    thr, sat = 40.0, 250.0 if colour else 4000.0
    sums, edge_hit = K.fine_sums(
        img, dark, True, 1 / gain, True, 0.0, u0, v0, wu0, wu1, wv0, wv1, k,
        bg0, bgu, bgv, uc, vc, area, ax, ay, xm, ym, xref, yref,
        marker, masked, free_c, masked, o, s, nv, nu, cv0, cu0, edge, True, sat, thr, 5.0,
    )  # fmt: skip
    # Reference: the same quantities with numpy on the window.
    rr = np.arange(wv0, wv1, k)
    cc = np.arange(wu0, wu1, k)
    R, Cc = np.meshgrid(rr, cc, indexing="ij")
    g = (_grey(img)[R + v0, Cc + u0] - _grey(dark)[R + v0, Cc + u0]) / gain[R, Cc]
    g = g - (bg0 + bgu * (Cc - uc) + bgv * (R - vc))
    m = np.ones_like(g)
    if masked:
        m[marker[R, Cc]] = 0.0
        ci = np.clip(np.clip((R - o + s // 2) // s, 0, nv - 1) - cv0, 0, free_c.shape[0] - 1)
        cj = np.clip(np.clip((Cc - o + s // 2) // s, 0, nu - 1) - cu0, 0, free_c.shape[1] - 1)
        m[free_c[ci, cj] == 0] = 0.0
    a = area[R, Cc].astype(np.float64)
    w = g * m * a
    dx, dy = xm[R, Cc] - xref, ym[R, Cc] - yref
    half = (np.arange(len(rr)) % 2 == 0)[:, None] & np.ones(len(cc), bool)[None, :]
    quarter = (np.arange(len(rr)) % 4 == 0)[:, None] & np.ones(len(cc), bool)[None, :]
    am = a * m
    above = (g > thr) & half
    raw = img[R + v0, Cc + u0]
    hot = raw >= sat if raw.ndim == 2 else np.any(raw[..., :3] >= sat, axis=-1)
    ig = 1.0 / gain[R, Cc].astype(np.float64)
    d2 = dx * dx + dy * dy
    light = 2.0 * np.maximum(_grey(dark)[R + v0, Cc + u0], 0.0) * ig  # black level 0
    qa, qb, qc = am**2 * ig**2, am**2 * (np.maximum(g, 0) + light) * ig, am**2 * g**2
    ref = [
        w.sum(), (w * xm[R, Cc]).sum(), (w * ym[R, Cc]).sum(),
        w[half].sum(), (w * dx * dx)[half].sum(), (w * dy * dy)[half].sum(),
        qa[quarter].sum(), (qa * dx)[quarter].sum(), (qa * dy)[quarter].sum(),
        (qa * d2)[quarter].sum(),
        g[half].max(), g.sum(), above.sum(), (above & hot).sum(),
    ]  # fmt: skip
    for q in (qb, qc):
        q4 = q[quarter]
        ref += [q4.sum(), (q * dx)[quarter].sum(), (q * dy)[quarter].sum(), (q * d2)[quarter].sum()]
    # the noise fit: runs of four measured pixels off dark ink along the rows used
    fit = np.zeros(6)
    ok = (am > 0) & (ig <= 2.0)
    for i in range(0, len(rr), 8):
        for j in range(len(cc) - 3):
            sb = g[i, j : j + 4].mean()
            if ok[i, j : j + 4].all() and sb > 0:
                y = (g[i, j] - 3 * g[i, j + 1] + 3 * g[i, j + 2] - g[i, j + 3]) ** 2 / 20
                fit += [sb * y, sb * sb * y, sb, sb**2, sb**3, sb**4]
    ref += list(fit)
    assert fit[2] > 0
    # ref is in the order of the names below; the kernel's output is read by name
    fs = K.name_fine_sums(sums)
    got = [fs.flux, fs.s_x, fs.s_y, fs.f2, fs.s_xx, fs.s_yy, *fs.q_read, fs.peak_dn,
           fs.sig_sum, fs.n_above, fs.n_sat, *fs.q_shot, *fs.q_flat, *fs.fit]  # fmt: skip
    assert len(got) == len(ref) == K.FS_SIZE
    # float32 row sums against float64: relative round-off ~1e-6 per row, x4 margins
    scale = [np.abs(w).sum()] * 6 + [np.abs(q).sum() for q in (qa,) * 4]
    for i in range(10):
        assert got[i] == pytest.approx(ref[i], abs=2e-5 * scale[i] * 4), i
    for i, q in zip(range(14, 22), (qb,) * 4 + (qc,) * 4, strict=True):
        assert got[i] == pytest.approx(ref[i], abs=1e-4 * np.abs(q).sum()), i
    for i in range(22, 28):
        assert got[i] == pytest.approx(ref[i], rel=1e-4), i
    assert fs.peak_dn == pytest.approx(ref[10], rel=1e-5)
    assert fs.sig_sum == pytest.approx(ref[11], rel=1e-4, abs=1e-3 * np.abs(g).sum())
    # pixel counts: float32 vs float64 signal may differ on a pixel within round-off of
    # the threshold (none in this seeded window; one would be a 1-pixel difference)
    assert abs(fs.n_above - ref[12]) <= 1 and fs.n_above > 0
    assert abs(fs.n_sat - ref[13]) <= 1
    assert edge_hit == bool((above & edge[R, Cc]).any())


def test_colour_grey_row_matches_opencv() -> None:
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    full = np.ones((5, 6), bool)
    sig = K.coarse_pass(
        bgr, K.EMPTY2_U8, False, K.EMPTY2_F32, False, 0.0, 0, 0, 8, 5, 6, np.flatnonzero(full),
        np.ones((5, 6), np.float32), np.flatnonzero(full), np.zeros(0, np.intp), 6.0,
    )[0]  # fmt: skip
    cv_grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[4::8, 4::8][:5, :6]
    # The same fixed-point weights; OpenCV rounds to integers: within half a DN.
    assert np.abs(sig - cv_grey).max() <= 0.5


def test_label_components_match_opencv_closing() -> None:
    """Components as OpenCV's 8-connected labelling after a 3x3 closing would group the
    samples (for blobs and straight one-sample gaps), with the same boxes and sums."""
    rng = np.random.default_rng(5)
    sm = rng.normal(0.0, 1.0, (60, 80)).astype(np.float32)
    yy, xx = np.mgrid[0:60, 0:80]
    for cy, cx, r in ((15, 20, 5), (40, 60, 7), (45, 15, 3)):
        sm += np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, 20.0, 0.0).astype(np.float32)
    sm[15, 24:27] = -5.0  # a one-sample-wide trench across the first blob: still one
    sm[10:30, 40] = 20.0  # a line with a one-sample gap at row 20: one component
    sm[20, 40] = -5.0
    thr = 6.0
    n_lab, labels, stats, mom = K.label_components(sm, thr, K.EMPTY2_F32, False)
    binary = (sm > thr).astype(np.uint8) * 255
    closed = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n_cv, lab_cv, st_cv, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    assert n_lab == n_cv == 5
    # Same partition of the above-threshold samples.
    above = sm > thr
    pairs = {(int(a), int(b)) for a, b in zip(labels[above], lab_cv[above], strict=True)}
    assert len(pairs) == n_lab - 1
    for a, b in pairs:
        sel = above & (labels == a)
        assert np.all(lab_cv[sel] == b)
        rr, cc = np.nonzero(sel)
        assert stats[a].tolist() == [cc.min(), rr.min(), np.ptp(cc) + 1, np.ptp(rr) + 1, sel.sum()]
        w = np.maximum(sm, 0.0) * sel
        assert mom[a, 0] == pytest.approx(w.sum(), rel=1e-6)
        assert mom[a, 1] == pytest.approx((w * xx).sum(), rel=1e-6)
        assert mom[a, 2] == pytest.approx((w * yy).sum(), rel=1e-6)

    # With a flat field the fourth moment is the signal x gain (before the division).
    inv_gain = rng.uniform(0.5, 20.0, sm.shape).astype(np.float32)
    n2, lab2, _, mom2 = K.label_components(sm, thr, inv_gain, True)
    assert n2 == n_lab and np.array_equal(lab2, labels)
    for a in range(1, n_lab):
        sel = labels == a
        assert mom2[a, 3] == pytest.approx(float((sm[sel] / inv_gain[sel]).sum()), rel=1e-5)
        assert mom[a, 3] == pytest.approx(mom[a, 0])


def test_window_and_flag_kernels_match_numpy() -> None:
    rng = np.random.default_rng(9)
    sm = rng.uniform(0.0, 10.0, (40, 50)).astype(np.float32)
    labels = np.zeros((40, 50), np.int32)
    labels[5:20, 8:30] = 1
    labels[12:16, 18:22] = 2  # a hole of another label inside label 1's box
    labels[30:35, 40:48] = 3
    sm[9, 11] = 100.0
    lab, (x0, y0, w, h) = 1, (8, 5, 22, 15)
    peak, bx, by, bw, bh = K.own_extent(labels, sm, x0, y0, w, h, lab, 0.05)
    own = labels == lab
    assert peak == pytest.approx(float(sm[own].max()))
    rr, cc = np.nonzero(own & (sm > 0.05 * peak))
    assert (bx, by, bw, bh) == (cc.min(), rr.min(), np.ptp(cc) + 1, np.ptp(rr) + 1)
    # Only the peak is above 50 % of it: a one-sample box.
    assert K.own_extent(labels, sm, x0, y0, w, h, lab, 0.5)[1:] == (11, 9, 1, 1)
    cand = np.array([0, 2], np.intp)  # labels 1 and 3 are candidates (label - 1)
    assert K.others_in_box(labels, 5, 20, 8, 30, 1, cand) == (True, False)
    assert K.others_in_box(labels, 0, 40, 0, 50, 1, cand) == (True, True)
    assert K.others_in_box(labels, 30, 35, 40, 48, 3, cand) == (False, False)
    cov_lt1 = np.zeros((40, 50), bool)
    marker = np.zeros((40, 50), bool)

    def near(m: np.ndarray) -> np.ndarray:  # marker cells dilated by one cell (8-neighbours)
        return cv2.dilate(m.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)

    assert K.own_flags(labels, 3, 40, 30, 8, 5, cov_lt1, near(marker), True) == (False, False)
    marker[29, 47] = True  # diagonal neighbour of label 3's corner sample (30, 47)
    cov_lt1[34, 40] = True
    assert K.own_flags(labels, 3, 40, 30, 8, 5, cov_lt1, near(marker), True) == (True, True)
    assert K.own_flags(labels, 3, 40, 30, 8, 5, cov_lt1, near(marker), False) == (True, False)
    marker[29, 47], marker[28, 47] = False, True  # two cells away: not near
    assert K.own_flags(labels, 3, 40, 30, 8, 5, cov_lt1, near(marker), True)[1] is False


def test_local_maxima_count_matches_the_opencv_precheck() -> None:
    """The deblending's pre-check (5x5 local maxima of the component above a level) as
    `_deblend` computes it with OpenCV, on random lumpy components."""
    rng = np.random.default_rng(21)
    k5 = np.ones((5, 5), np.uint8)
    counts = []
    for _ in range(200):
        sm = cv2.GaussianBlur(rng.normal(0, 1, (30, 40)).astype(np.float32), (5, 5), 1.5) * 10
        labels = (sm > 0.5).astype(np.int32)
        labels[:, 20:] *= 2  # two labels
        x0, y0, w, h = 0, 0, 20, 30
        vals = sm[y0 : y0 + h, x0 : x0 + w] * (labels[y0 : y0 + h, x0 : x0 + w] == 1)
        level = float(rng.uniform(2.0, 20.0))
        ref = int(np.count_nonzero((vals >= cv2.dilate(vals, k5)) & (vals > level)))
        got = K.n_local_max5(labels, sm, 1, x0, y0, w, h, level)
        assert got == min(ref, 2)
        counts.append(ref)
    assert min(counts) <= 1 and max(counts) >= 2  # both outcomes drawn


@pytest.mark.parametrize(("dtype", "colour"), [(np.uint16, False), (np.uint8, True)])
def test_dark_spot_light_matches_numpy(dtype, colour) -> None:
    rng = np.random.default_rng(17)
    h, w = 300, 340
    u0, v0, s = 11, 7, 8
    o = s // 2
    nv, nu = (h - v0 - o) // s, (w - u0 - o) // s
    shape = (h, w, 3) if colour else (h, w)
    dark = rng.integers(90, 110, shape).astype(dtype)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = 120.0 * np.exp(-0.5 * ((xx - 170.0) ** 2 + (yy - 150.0) ** 2) / 25.0**2)
    dark = (dark + (blob[..., None] if colour else blob)).astype(dtype)
    full = rng.random((nv, nu)) > 0.1
    ring, box = (5, 33, 6, 36), (12, 26, 13, 29)
    light, ambient = K.dark_spot_light(dark, 64.0, u0, v0, s, full, *ring, *box, 30.0)
    rows = v0 + o + s * np.arange(nv)
    cols = u0 + o + s * np.arange(nu)
    d = _grey(dark)[np.ix_(rows, cols)] - 64.0
    r = np.s_[ring[0] : ring[1], ring[2] : ring[3]]
    ambient_ref = np.median(d[r][full[r]])
    b = np.s_[box[0] : box[1], box[2] : box[3]]
    ex = d[b][full[b]] - ambient_ref
    ref = ex[ex > 30.0].sum() * s * s
    assert ref > 1e4  # the blob is in the box
    assert light == pytest.approx(ref, rel=1e-4)
    assert ambient == pytest.approx(ambient_ref, rel=1e-6)
    # no board samples in the ring: no ambient level, no light
    none = K.dark_spot_light(dark, 64.0, u0, v0, s, np.zeros_like(full), *ring, *box, 30.0)[0]
    assert none == 0.0
