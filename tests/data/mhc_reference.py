#!/usr/bin/env python3
"""Reference values for `src/model/mhc.rs` (mHC: manifold-constrained hyper-connections).

Run:  /usr/bin/python3 tests/data/mhc_reference.py     (numpy only; writes mhc_reference.json
      next to this file; deterministic: numpy.random.default_rng with fixed seeds)

Provenance. An independent float64 numpy implementation written from the text of
crate's mHC implementation notes (a digest of [HC], [mHC], [V4] and [TK]; the section
numbers below are theirs), not from the Rust code:
  * §1 "The mHC residual update for one sublayer", steps 1-8 ([mHC] Eqs. 3, 7, 8; [V4]
    Block.hc_pre / hc_post; [TK] mhc_pre / mhc_post), with the fused form of §3.2 item 5
    ([mHC] Eqs. 14-16: norm *after* the matmul, bias added after the 1/r scaling) and the
    parameter layout of the §3.2 table (phi = DeepSeek fn transposed, [n*C, n^2+2n];
    base = pre[0:n] | post[n:2n] | res[2n:] row-major, R[j,k] = entry 2n + j*n + k;
    scale = (alpha_pre, alpha_post, alpha_res)).
  * §1 "Sinkhorn as shipped" and §3.3 ([V4] hc_split_sinkhorn_kernel, [TK]
    sinkhorn_normalize_ref): c = softmax over k (last axis) + eps; c /= (sum over j + eps);
    then iters-1 times: row (sum over k) then column (sum over j), each "+ eps" in the sum.
    The script also checks §3.3's orientation claim against the *paper's* Eq. 9 form
    (exp, then T_r(T_c(.)) on H^res = R^T, eps = 0): comb == (H^res)^T.
  * §3.4 epsilons: pre = sigmoid(.) + eps_hc; post = 2 * sigmoid(.) (no eps).
  * §1 step 8 / §3.3 merge convention: X'[k] = post[k] * y + sum_j comb[j,k] * X[j].
  * §3.6 exit: V4 head collapse h = sum_j (sigmoid(alpha_h * mix_h + b_h) + eps_hc)[j] X[j],
    mix_h = (xf . phi_h) * r; and the HC exit, the plain sum of the streams.
  The formulas were cross-read against deepseek-ai/TileKernels tile_kernels/torch/mhc.py
  (sinkhorn_normalize_ref, mhc_pre_split_mixes_ref, mhc_post_ref, mhc_pre_norm_fn_ref,
  mhc_head_compute_mix_ref) and agree with the spec.

The sublayer function of case (b) is fixed so both sides can compute it:
    F(u) = tanh(RMSNorm(u) @ W),  RMSNorm(u) = u / sqrt(mean(u^2) + 1e-5)  (gain 1)
i.e. the block's own pre-norm (applied after the collapse, §3.6) followed by a fixed map.
Parameters are drawn far from the init (random phi, base, scale) so every part of the
parameterisation (static and dynamic, all three maps) moves the outputs.
"""
import json
import os

import numpy as np


def sinkhorn_shipped(logits, iters, eps):
    """§3.3 shipped code, on comb[..., j, k] = R[..., j, k]."""
    z = logits - logits.max(axis=-1, keepdims=True)
    c = np.exp(z)
    c = c / c.sum(axis=-1, keepdims=True) + eps           # softmax over k, + eps
    c = c / (c.sum(axis=-2, keepdims=True) + eps)         # column: sum over j
    for _ in range(iters - 1):
        c = c / (c.sum(axis=-1, keepdims=True) + eps)     # row: sum over k
        c = c / (c.sum(axis=-2, keepdims=True) + eps)     # column: sum over j
    return c


def sinkhorn_paper(h_res_logits, iters):
    """[mHC] Eq. 9: M0 = exp(H~res); M_t = T_r(T_c(M_{t-1})), no eps."""
    m = np.exp(h_res_logits)
    for _ in range(iters):
        m = m / m.sum(axis=-2, keepdims=True)   # T_c: columns sum to 1
        m = m / m.sum(axis=-1, keepdims=True)   # T_r: rows sum to 1
    return m


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def coefficients(x, phi, base, scale, n, iters, norm_eps, pre_eps, sk_eps):
    """§1 steps 1-5. x: [B, T, n, C] -> pre [B,T,n], post [B,T,n], comb [B,T,n,n]."""
    b, t, _, c = x.shape
    xf = x.reshape(b, t, n * c)                                        # step 1
    r = 1.0 / np.sqrt((xf ** 2).mean(axis=-1, keepdims=True) + norm_eps)  # step 2
    mix = (xf @ phi) * r                                               # step 3
    pre = sigmoid(scale[0] * mix[..., 0:n] + base[0:n]) + pre_eps      # step 4
    post = 2.0 * sigmoid(scale[1] * mix[..., n:2 * n] + base[n:2 * n])
    res = (scale[2] * mix[..., 2 * n:] + base[2 * n:]).reshape(b, t, n, n)  # R[j,k]
    comb = sinkhorn_shipped(res, iters, sk_eps)                        # step 5
    return pre, post, comb


def block_fn(u, w, eps=1e-5):
    """The fixed sublayer F: tanh(RMSNorm(u) @ W)."""
    nu = u / np.sqrt((u ** 2).mean(axis=-1, keepdims=True) + eps)
    return np.tanh(nu @ w)


def tensor(a):
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": [float(v) for v in a.reshape(-1)]}


def main():
    out = {"provenance": "tests/data/mhc_reference.py: float64 numpy from the mHC notes §1, §3.2-§3.4, §3.6"}

    # (a) Sinkhorn on fixed logits.
    cases = []
    for seed, (nb, m, std, iters, eps) in enumerate([
        (3, 4, 0.5, 20, 1e-6),
        (3, 4, 1.0, 20, 1e-6),
        (3, 4, 3.0, 20, 1e-6),   # peaked: rows far from 1 after 20 iterations (§3.3)
        (2, 4, 2.0, 1, 1e-6),    # one iteration: only the fused softmax + column pass
        (2, 4, 1.0, 5, 0.0),     # no eps
        (2, 3, 1.0, 20, 1e-6),   # another n
    ]):
        rng = np.random.default_rng(1000 + seed)
        logits = rng.normal(0.0, std, size=(nb, m, m))
        comb = sinkhorn_shipped(logits, iters, eps)
        cases.append({"iters": iters, "eps": eps, "logits": tensor(logits), "comb": tensor(comb)})
    out["sinkhorn"] = cases

    # Orientation claim of §3.3 (eps = 0): comb == (H^res)^T with H^res from the paper's Eq. 9
    # applied to the paper's logits H~res = R^T.
    rng = np.random.default_rng(7)
    r_logits = rng.normal(0.0, 3.0, size=(5, 4, 4))
    comb0 = sinkhorn_shipped(r_logits, 20, 0.0)
    h_res = sinkhorn_paper(np.swapaxes(r_logits, -1, -2), 20)
    assert np.abs(comb0 - np.swapaxes(h_res, -1, -2)).max() < 1e-12

    # (b) One full sublayer.
    n, d, bsz, t = 4, 8, 2, 3
    iters, norm_eps, pre_eps, sk_eps, block_eps = 20, 1e-6, 1e-6, 1e-6, 1e-5
    rng = np.random.default_rng(2024)
    k = n * n + 2 * n
    phi = rng.normal(0.0, 0.3, size=(n * d, k))
    base = rng.normal(0.0, 1.0, size=(k,))
    scale = np.array([0.7, -0.4, 1.3])
    w = rng.normal(0.0, 1.0 / np.sqrt(d), size=(d, d))
    x = rng.normal(0.0, 1.0, size=(bsz, t, n, d))
    pre, post, comb = coefficients(x, phi, base, scale, n, iters, norm_eps, pre_eps, sk_eps)
    x_in = np.einsum("btj,btjc->btc", pre, x)                           # step 6
    y = block_fn(x_in, w, block_eps)                                    # step 7
    merged = post[..., None] * y[:, :, None, :] + np.einsum("btjk,btjc->btkc", comb, x)  # step 8
    # Step 8 written as an explicit loop, the documented X'[k] = post[k] y + sum_j comb[j,k] X[j].
    loop = np.zeros_like(merged)
    for kk in range(n):
        loop[:, :, kk] = post[:, :, kk, None] * y
        for j in range(n):
            loop[:, :, kk] += comb[:, :, j, kk, None] * x[:, :, j]
    assert np.abs(loop - merged).max() < 1e-12

    # Exit: V4 head collapse (§3.6) and the HC sum, applied to the merged streams.
    phi_h = rng.normal(0.0, 0.3, size=(n * d, n))
    base_h = rng.normal(0.0, 1.0, size=(n,))
    scale_h = np.array([0.9])
    mf = merged.reshape(bsz, t, n * d)
    rh = 1.0 / np.sqrt((mf ** 2).mean(axis=-1, keepdims=True) + norm_eps)
    pre_h = sigmoid(scale_h[0] * (mf @ phi_h) * rh + base_h) + pre_eps
    head = np.einsum("btj,btjc->btc", pre_h, merged)

    out["sublayer"] = {
        "streams": n, "d_model": d, "sinkhorn_iters": iters, "norm_eps": norm_eps,
        "pre_eps": pre_eps, "sinkhorn_eps": sk_eps, "block_norm_eps": block_eps,
        "phi": tensor(phi), "base": tensor(base), "scale": tensor(scale), "w": tensor(w),
        "x": tensor(x), "pre": tensor(pre), "post": tensor(post), "comb": tensor(comb),
        "x_in": tensor(x_in), "y": tensor(y), "out": tensor(merged),
        "head_phi": tensor(phi_h), "head_base": tensor(base_h), "head_scale": tensor(scale_h),
        "head_weights": tensor(pre_h), "head_out": tensor(head), "sum_out": tensor(merged.sum(axis=2)),
    }

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mhc_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
