#!/usr/bin/env python3
"""Independent numpy parity check for the crate's Engram layer export.

Usage:
    python3 tests/parity/engram_parity.py MODEL.safetensors PROBE.safetensors [--rtol 1e-5]
    python3 tests/parity/engram_parity.py --self-test-vectors engram_hash_testvectors.json

The reference formulas below are those of the paper (arXiv 2601.07372) and the official
demo engram_demo_v1.py (multipliers, hash, layer; the demo's Engram.forward), written
independently of the crate's Rust code. Only numpy and the standard library are used;
safetensors files are parsed by hand and memory-mapped, so of a large embedding table
only the gathered rows are read.

Exit codes: 0 every check passed; 1 a check failed (the message names the layer and
tensor); 2 a malformed file (missing tensor or metadata key, wrong dtype or shape);
3 numpy is not installed.
"""

import argparse
import json
import math
import mmap
import struct
import sys

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.stderr.write("engram_parity.py needs numpy (pip install numpy)\n")
    sys.exit(3)

MODEL_FORMAT = "engram-rs/1"
PROBE_FORMAT = "engram-rs-probe/1"
I64_MAX = 2**63 - 1


class Malformed(Exception):
    """A file does not follow the contract (exit 2)."""


class CheckFailed(Exception):
    """A check failed so badly that nothing after it can be checked (exit 1)."""


# --------------------------------------------------------------------------------------
# safetensors, parsed by hand
# --------------------------------------------------------------------------------------

_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


class SafeTensors:
    """Read-only, memory-mapped view of one safetensors file."""

    def __init__(self, path, role):
        self.path = path
        self.role = role
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise Malformed(f"{role} file {path}: cannot open: {e}")
        head = self._file.read(8)
        if len(head) != 8:
            raise Malformed(f"{role} file {path}: shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        self._file.seek(0, 2)
        size = self._file.tell()
        if n > size - 8:
            raise Malformed(f"{role} file {path}: header length {n} exceeds the file size {size}")
        self._file.seek(8)
        raw = self._file.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Malformed(f"{role} file {path}: header is not valid UTF-8 JSON: {e}")
        if not isinstance(header, dict):
            raise Malformed(f"{role} file {path}: header is not a JSON object")
        meta = header.pop("__metadata__", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise Malformed(f"{role} file {path}: __metadata__ must map strings to strings")
        self.metadata = meta
        self.header = header
        self.data_start = 8 + n
        self.data_len = size - self.data_start
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        if self._mm is not None and hasattr(self._mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
            self._mm.madvise(mmap.MADV_RANDOM)  # sparse row gathers: no read-ahead

    def has(self, name):
        return name in self.header

    def meta(self, key):
        if key not in self.metadata:
            raise Malformed(f"{self.role} file: missing metadata key '{key}'")
        return self.metadata[key]

    def tensor(self, name, dtype, shape=None):
        """Return a read-only numpy view; shape entries of None are free."""
        if name not in self.header:
            raise Malformed(f"{self.role} file: missing tensor '{name}'")
        info = self.header[name]
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise Malformed(f"{self.role} file: tensor '{name}' has an incomplete header entry")
        if info["dtype"] != dtype:
            raise Malformed(f"{self.role} file: tensor '{name}' has dtype {info['dtype']}, expected {dtype}")
        tshape = info["shape"]
        if not isinstance(tshape, list) or not all(isinstance(s, int) and s >= 0 for s in tshape):
            raise Malformed(f"{self.role} file: tensor '{name}' has an invalid shape {tshape!r}")
        if shape is not None:
            ok = len(tshape) == len(shape) and all(e is None or e == s for e, s in zip(shape, tshape))
            if not ok:
                want = "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"
                raise Malformed(f"{self.role} file: tensor '{name}' has shape {tshape}, expected {want}")
        offs = info["data_offsets"]
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)):
            raise Malformed(f"{self.role} file: tensor '{name}' has invalid data_offsets {offs!r}")
        begin, end = offs
        np_dtype = np.dtype(_DTYPES[dtype])
        count = int(np.prod(tshape, dtype=np.int64)) if tshape else 1
        if end - begin != count * np_dtype.itemsize or begin < 0 or end > self.data_len:
            raise Malformed(
                f"{self.role} file: tensor '{name}' data_offsets {offs} do not fit shape {tshape} "
                f"x {dtype} inside the {self.data_len}-byte data section")
        if count == 0:
            return np.zeros(tshape, dtype=np_dtype)
        arr = np.frombuffer(self._mm, dtype=np_dtype, count=count, offset=self.data_start + begin)
        return arr.reshape(tshape)


# --------------------------------------------------------------------------------------
# Reference: multipliers, primes, hash (the paper §2.2 and the demo: multipliers, primes, hash)
# --------------------------------------------------------------------------------------

def half_bound_for(vp):
    return max(1, ((2**63 - 1) // vp) // 2)


def multipliers_for(seed, layer_id, n, vp):
    hb = half_bound_for(vp)
    r = np.random.default_rng(seed + 10007 * layer_id).integers(0, hb, size=n, dtype=np.int64)
    return hb, [2 * int(x) + 1 for x in r]


def is_prime(n):
    """Deterministic Miller-Rabin, exact for n < 3.3e24 (bases 2..41)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def derive_primes(engram_vocab_size, n_max, k, layer_ids):
    """Section 3: one `seen` set over all layers and orders. Returns {layer_id: [[p]*K]*(N-1)}."""
    seen = set()
    out = {}
    for lid in layer_ids:
        per_order = []
        for order in range(2, n_max + 1):
            start = engram_vocab_size[order - 2] - 1
            heads = []
            for _ in range(k):
                p = start + 1
                while not is_prime(p) or p in seen:
                    p += 1
                seen.add(p)
                heads.append(p)
                start = p
            per_order.append(heads)
        out[lid] = per_order
    return out


def hash_rows(compressed, pad, multipliers, primes, offsets):
    """Section 4. compressed: int64 [T]; primes: (N-1) lists of K ints; offsets flat.

    Returns (ids, rows), both int64 [T, (N-1)*K], heads ordered 2-gram 0..K-1, 3-gram ...
    """
    x = np.asarray(compressed, dtype=np.int64)
    t_len = x.shape[0]
    n_max = len(multipliers)
    shifted = []
    for k in range(n_max):
        s = np.full(t_len, pad, dtype=np.int64)
        if k < t_len:
            s[k:] = x[:t_len - k] if k > 0 else x
        shifted.append(s)
    mix = shifted[0] * np.int64(multipliers[0])
    ids = []
    for order in range(2, n_max + 1):
        mix = np.bitwise_xor(mix, shifted[order - 1] * np.int64(multipliers[order - 1]))
        for p in primes[order - 2]:
            ids.append(np.mod(mix, np.int64(p)))
    ids = np.stack(ids, axis=1) if ids else np.zeros((t_len, 0), dtype=np.int64)
    rows = ids + np.asarray(offsets, dtype=np.int64)[None, :]
    return ids, rows


# --------------------------------------------------------------------------------------
# Reference: the layer (the demo's Engram.forward), float64
# --------------------------------------------------------------------------------------

def rms_norm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def sigmoid(x):
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def linear(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


def engram_layer(e, hidden, wv, bv, keys, gate, conv, eps_gate, eps_conv, dilation):
    """e [T, d_mem]; hidden [T, M, D]; keys: list of (Wk, bk, g_key, g_query) per stream;
    conv: None or (weight [M*D, 1, kernel], [norm gain per stream]). Returns (Y, alpha)."""
    t_len, m_streams, d = hidden.shape
    v = linear(e, wv, bv)                                   # [T, D]
    alpha = np.ones((t_len, m_streams))
    if gate:
        for m, (wk, bk, g_key, g_query) in enumerate(keys):
            k = rms_norm(linear(e, wk, bk), g_key, eps_gate)
            q = rms_norm(hidden[:, m, :], g_query, eps_gate)
            s = np.sum(k * q, axis=-1) / math.sqrt(d)
            s = np.sign(s) * np.sqrt(np.maximum(np.abs(s), 1e-6))
            alpha[:, m] = sigmoid(s)
    vt = alpha[:, :, None] * v[:, None, :]                  # [T, M, D]
    if conv is None:
        return vt, alpha
    weight, norm_gains = conv
    kernel = weight.shape[2]
    xn = np.stack([rms_norm(vt[:, m, :], norm_gains[m], eps_conv) for m in range(m_streams)], axis=1)
    xc = xn.reshape(t_len, m_streams * d)                   # channel c = m*D + d
    w = weight[:, 0, :]                                     # [C, kernel]
    y = np.zeros_like(xc)
    for j in range(kernel):
        shift = (kernel - 1 - j) * dilation
        if shift == 0:
            y += w[:, j][None, :] * xc
        elif shift < t_len:
            y[shift:] += w[:, j][None, :] * xc[:t_len - shift]
    y = y * sigmoid(y)                                      # SiLU
    return vt + y.reshape(t_len, m_streams, d), alpha


# --------------------------------------------------------------------------------------
# Reading the contract
# --------------------------------------------------------------------------------------

def meta_int(st, key):
    s = st.meta(key)
    try:
        return int(s.strip())
    except ValueError:
        raise Malformed(f"{st.role} file: metadata '{key}' = {s!r} is not an integer")


def meta_float(st, key):
    s = st.meta(key)
    try:
        return float(s)
    except ValueError:
        raise Malformed(f"{st.role} file: metadata '{key}' = {s!r} is not a float")


def meta_bool(st, key):
    s = st.meta(key).strip().lower()
    if s not in ("true", "false"):
        raise Malformed(f"{st.role} file: metadata '{key}' = {s!r} is not 'true' or 'false'")
    return s == "true"


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def meta_json_ints(st, key, length=None):
    s = st.meta(key)
    try:
        v = json.loads(s)
    except ValueError:
        raise Malformed(f"{st.role} file: metadata '{key}' = {s!r} is not JSON")
    if not isinstance(v, list) or not all(_is_int(x) for x in v):
        raise Malformed(f"{st.role} file: metadata '{key}' = {s!r} is not a JSON list of integers")
    if length is not None and len(v) != length:
        raise Malformed(f"{st.role} file: metadata '{key}' has {len(v)} entries, expected {length}")
    return v


def meta_json_int_matrix(st, key, rows, cols):
    s = st.meta(key)
    try:
        v = json.loads(s)
    except ValueError:
        raise Malformed(f"{st.role} file: metadata '{key}' = {s!r} is not JSON")
    ok = (isinstance(v, list) and len(v) == rows
          and all(isinstance(r, list) and len(r) == cols and all(_is_int(x) for x in r) for r in v))
    if not ok:
        raise Malformed(f"{st.role} file: metadata '{key}' is not a JSON list of {rows} lists of {cols} integers")
    return v


def f64(a):
    return np.asarray(a, dtype=np.float64)


def max_rel_err(ref, got):
    """max|ref - got| / max(max|got|, 1e-30); also the argmax index. NaN/inf -> inf."""
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(ref))):
        bad = np.argwhere(~(np.isfinite(got) & np.isfinite(ref)))[0]
        return math.inf, tuple(int(i) for i in bad)
    diff = np.abs(ref - got)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
    denom = max(float(np.max(np.abs(got))), 1e-30)
    return float(diff[idx]) / denom, tuple(int(i) for i in idx)


# --------------------------------------------------------------------------------------
# The parity run
# --------------------------------------------------------------------------------------

def run_parity(model_path, probe_path, rtol):
    model = SafeTensors(model_path, "MODEL")
    probe = SafeTensors(probe_path, "PROBE")
    failures = []

    fmt = model.meta("format")
    if fmt != MODEL_FORMAT:
        raise Malformed(f"MODEL file: metadata 'format' = {fmt!r}, expected {MODEL_FORMAT!r}")
    pfmt = probe.meta("format")
    if pfmt != PROBE_FORMAT:
        raise Malformed(f"PROBE file: metadata 'format' = {pfmt!r}, expected {PROBE_FORMAT!r}")
    text = probe.meta("text")

    layer_ids = meta_json_ints(model, "engram.layer_ids")
    n_max = meta_int(model, "engram.max_ngram_size")
    k_heads = meta_int(model, "engram.n_head_per_ngram")
    seed = meta_int(model, "engram.seed")
    pad = meta_int(model, "engram.pad_compressed")
    vp = meta_int(model, "engram.compressed_vocab_size")
    d_head = meta_int(model, "engram.d_head")
    m_streams = meta_int(model, "engram.hc_mult")
    kernel = meta_int(model, "engram.kernel_size")
    dilation = meta_int(model, "engram.dilation")
    gate = meta_bool(model, "engram.gate")
    short_conv = meta_bool(model, "engram.short_conv")
    eps_gate = meta_float(model, "engram.norm_eps_gate")
    eps_conv = meta_float(model, "engram.norm_eps_conv")
    for name, val, lo in (("engram.max_ngram_size", n_max, 2), ("engram.n_head_per_ngram", k_heads, 1),
                          ("engram.compressed_vocab_size", vp, 1), ("engram.d_head", d_head, 1),
                          ("engram.hc_mult", m_streams, 1), ("engram.kernel_size", kernel, 1),
                          ("engram.dilation", dilation, 1)):
        if val < lo:
            raise Malformed(f"MODEL file: metadata '{name}' = {val} must be >= {lo}")
    if not layer_ids:
        raise Malformed("MODEL file: metadata 'engram.layer_ids' is empty")
    if dilation != n_max:
        failures.append(f"metadata: engram.dilation = {dilation}, but the spec requires dilation = "
                        f"max_ngram_size = {n_max}")
    if not 0 <= pad < vp:
        raise CheckFailed(f"metadata: engram.pad_compressed = {pad} is outside [0, V' = {vp})")
    n_heads = (n_max - 1) * k_heads
    d_mem = n_heads * d_head

    cmap = model.tensor("engram.compression_map", "I64", [None])
    input_ids = probe.tensor("input_ids", "I64", [None])
    t_len = input_ids.shape[0]
    if t_len == 0:
        raise Malformed("PROBE file: tensor 'input_ids' is empty")
    v_raw = cmap.shape[0]
    cmin, cmax = int(cmap.min()), int(cmap.max())
    if cmin < 0 or cmax >= vp:
        raise CheckFailed(f"engram.compression_map: values span [{cmin}, {cmax}], outside [0, V' = {vp})")
    if cmax + 1 != vp:
        failures.append(f"engram.compression_map: largest compressed id is {cmax}, but "
                        f"engram.compressed_vocab_size = {vp} (expected max + 1 = V')")
    imin, imax = int(input_ids.min()), int(input_ids.max())
    if imin < 0 or imax >= v_raw:
        raise CheckFailed(f"input_ids: values span [{imin}, {imax}], outside the vocabulary [0, {v_raw})")
    compressed = np.asarray(cmap[np.asarray(input_ids)], dtype=np.int64)

    print(f"engram parity: {len(layer_ids)} layer(s) at blocks {layer_ids}; N={n_max} K={k_heads} "
          f"d_head={d_head} d_mem={d_mem} M={m_streams} V={v_raw} V'={vp} pad'={pad} seed={seed}; "
          f"gate={gate} short_conv={short_conv} kernel={kernel} dilation={dilation}; T={t_len}; "
          f"rtol={rtol:g}")
    print(f"probe text: {text[:70]!r}{'...' if len(text) > 70 else ''}")
    for msg in failures:
        print(f"  FAIL {msg}")

    all_primes = []
    results = []
    for li, lid in enumerate(layer_ids):
        pre = f"engram.{li}."
        tag = f"layer {li} (block {lid})"
        lfail = []

        # ---- check 1: multipliers, primes/offsets, row ids ------------------------------
        mults = meta_json_ints(model, pre + "multipliers", n_max)
        hb_meta = meta_int(model, pre + "half_bound")
        primes = meta_json_int_matrix(model, pre + "primes", n_max - 1, k_heads)
        offsets = meta_json_ints(model, pre + "offsets", n_heads)
        total_rows = meta_int(model, pre + "total_rows")

        hb, ref_mults = multipliers_for(seed, lid, n_max, vp)
        if hb_meta != hb:
            lfail.append(f"{pre}half_bound = {hb_meta}, reference {hb}")
        if mults != ref_mults:
            lfail.append(f"{pre}multipliers = {mults}, reference (numpy default_rng) {ref_mults}")
        flat = [p for order in primes for p in order]
        bad = [p for p in flat if not is_prime(p)]
        if bad:
            lfail.append(f"{pre}primes: not prime: {bad[:5]}")
        dup = sorted(set(p for p in flat if flat.count(p) > 1 or p in all_primes))
        if dup:
            lfail.append(f"{pre}primes: repeated within or across layers: {dup[:5]}")
        all_primes.extend(flat)
        ref_offsets = [0]
        for p in flat[:-1]:
            ref_offsets.append(ref_offsets[-1] + p)
        if offsets != ref_offsets:
            lfail.append(f"{pre}offsets = {offsets}, reference prefix sums of the primes {ref_offsets}")
        if total_rows != sum(flat):
            lfail.append(f"{pre}total_rows = {total_rows}, reference sum of the primes {sum(flat)}")
        if any(m <= 0 or m > I64_MAX // max(vp, 1) for m in mults):
            raise CheckFailed(f"{tag}: {pre}multipliers {mults} would overflow int64 products with ids < V'")

        # The hash uses the recomputed multipliers and the metadata primes with recomputed
        # offsets (the primes themselves cannot be rederived: the exporter does not record
        # engram_vocab_size; they are checked for primality and distinctness above).
        _, ref_rows = hash_rows(compressed, pad, ref_mults, primes, ref_offsets)
        probe_rows = probe.tensor(f"rows.{li}", "I64", [t_len, n_heads])
        eq = ref_rows == probe_rows
        n_eq = int(eq.sum())
        if n_eq != eq.size:
            t, h = (int(i) for i in np.argwhere(~eq)[0])
            lfail.append(
                f"rows.{li}: {eq.size - n_eq} of {eq.size} row ids differ; first at t={t}, head {h} "
                f"({h // k_heads + 2}-gram head {h % k_heads}): probe {int(probe_rows[t, h])}, "
                f"reference {int(ref_rows[t, h])}")

        # ---- check 2: the layer output ---------------------------------------------------
        table = model.tensor(pre + "multi_head_embedding.embedding.weight", "F32", [None, d_head])
        if table.shape[0] != sum(flat):
            raise CheckFailed(f"{tag}: {pre}multi_head_embedding.embedding.weight has {table.shape[0]} "
                              f"rows, the primes sum to {sum(flat)}")
        wv = model.tensor(pre + "value_proj.weight", "F32", [None, d_mem])
        d = wv.shape[0]
        bv = model.tensor(pre + "value_proj.bias", "F32", [d]) if model.has(pre + "value_proj.bias") else None
        keys = []
        if gate:
            for m in range(m_streams):
                wk = model.tensor(f"{pre}key_projs.{m}.weight", "F32", [d, d_mem])
                bname = f"{pre}key_projs.{m}.bias"
                bk = model.tensor(bname, "F32", [d]) if model.has(bname) else None
                g_key = model.tensor(f"{pre}norm1.{m}.weight", "F32", [d])
                g_query = model.tensor(f"{pre}norm2.{m}.weight", "F32", [d])
                keys.append((f64(wk), None if bk is None else f64(bk), f64(g_key), f64(g_query)))
        conv = None
        if short_conv:
            cw = model.tensor(pre + "short_conv.conv.weight", "F32", [m_streams * d, 1, kernel])
            gains = [f64(model.tensor(f"{pre}short_conv.norms.{m}.weight", "F32", [d]))
                     for m in range(m_streams)]
            conv = (f64(cw), gains)
        hidden = probe.tensor(f"hidden_in.{li}", "F32", [t_len, m_streams, d])
        out = probe.tensor(f"engram_out.{li}", "F32", [t_len, m_streams, d])

        rows_safe = np.clip(ref_rows, 0, table.shape[0] - 1)
        if not np.array_equal(rows_safe, ref_rows):
            raise CheckFailed(f"{tag}: recomputed rows fall outside the table of {table.shape[0]} rows")
        # Gather only the needed rows (sorted unique, so the mapped table is read sparsely).
        uniq, inv = np.unique(ref_rows.reshape(-1), return_inverse=True)
        gathered = f64(table[uniq])[inv.reshape(-1)]
        e = gathered.reshape(t_len, n_heads * d_head)

        y, _ = engram_layer(e, f64(hidden), f64(wv), None if bv is None else f64(bv), keys, gate, conv,
                            eps_gate, eps_conv, dilation)
        rel, idx = max_rel_err(y, f64(out))
        if not rel <= rtol:
            t, m, dd = idx
            lfail.append(f"engram_out.{li}: max relative error {rel:.3e} > rtol {rtol:g}; worst at t={t}, "
                         f"stream {m}, d={dd}: probe {float(out[t, m, dd]):.9g}, reference {y[t, m, dd]:.9g}")

        status = "OK" if not lfail else "FAIL"
        print(f"{tag}: rows {n_eq}/{eq.size} exact; output max rel err {rel:.3e} "
              f"(rtol {rtol:g}; D={d}, rows {table.shape[0]}) {status}")
        for msg in lfail:
            print(f"  FAIL {tag}: {msg}")
        results.append(not lfail)
        failures.extend(f"{tag}: {msg}" for msg in lfail)

    if failures:
        print(f"FAIL: {len(failures)} check(s) failed over {len(layer_ids)} Engram layer(s):")
        for msg in failures:
            print(f"  - {msg}")
        return 1
    print(f"PASS: {len(layer_ids)} Engram layer(s): row ids exact, outputs within rtol {rtol:g}")
    return 0


# --------------------------------------------------------------------------------------
# Self-test against tests/data/engram_hash_testvectors.json
# --------------------------------------------------------------------------------------

def self_test_vectors(path):
    with open(path) as f:
        tv = json.load(f)
    x = tv["compressed_ids"]
    pad = tv["pad_compressed"]
    vp = tv["compressed_vocab_size"]
    seed = tv["seed"]
    n_max = tv["max_ngram_size"]
    k = tv["n_head_per_ngram"]
    layer_ids = tv["layer_ids"]
    primes_ref = derive_primes(tv["engram_vocab_size"], n_max, k, layer_ids)
    bad = []
    checked = 0
    for lid in layer_ids:
        lv = tv["layers"][str(lid)]
        hb, mults = multipliers_for(seed, lid, n_max, vp)
        if hb != lv["half_bound"]:
            bad.append(f"layer {lid}: half_bound {hb} != {lv['half_bound']}")
        if mults != lv["multipliers"]:
            bad.append(f"layer {lid}: multipliers {mults} != {lv['multipliers']}")
        if primes_ref[lid] != lv["primes"]:
            bad.append(f"layer {lid}: derived primes {primes_ref[lid]} != {lv['primes']}")
        flat = [p for order in lv["primes"] for p in order]
        offsets = [0]
        for p in flat[:-1]:
            offsets.append(offsets[-1] + p)
        ids, rows = hash_rows(np.array(x, dtype=np.int64), pad, lv["multipliers"], lv["primes"], offsets)
        if ids.tolist() != lv["hash_ids"]:
            bad.append(f"layer {lid}: hash_ids differ")
        if rows.tolist() != lv["rows"]:
            bad.append(f"layer {lid}: rows differ")
        checked += ids.size
    # The spec's N = 4 multiplier check (section 2).
    hb4, m4 = multipliers_for(0, 1, 4, 99092)
    if hb4 != 46539438283891 or m4 != [76632096046245, 4839876093313, 35959672319349, 73987337458391]:
        bad.append(f"reference multiplier check (N=4, V'=99092, layer 1): got {hb4}, {m4}")
    if bad:
        print("FAIL: hash test vectors:")
        for b in bad:
            print(f"  - {b}")
        return 1
    print(f"PASS: hash test vectors ({path}): half_bound, multipliers, primes and {checked} ids/rows "
          f"for layers {layer_ids} match; reference N=4 multiplier check matches")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Independent numpy parity check of the crate's Engram export.")
    ap.add_argument("model", nargs="?", help="MODEL.safetensors written by the exporter")
    ap.add_argument("probe", nargs="?", help="PROBE.safetensors written by the exporter")
    ap.add_argument("--rtol", type=float, default=1e-5, help="max relative error of the output (default 1e-5)")
    ap.add_argument("--self-test-vectors", metavar="PATH",
                    help="check the hash functions against engram_hash_testvectors.json")
    args = ap.parse_args(argv)
    if args.self_test_vectors is None and (args.model is None or args.probe is None):
        ap.error("MODEL and PROBE are required (or --self-test-vectors PATH)")
    rc = 0
    try:
        if args.self_test_vectors is not None:
            rc = max(rc, self_test_vectors(args.self_test_vectors))
        if args.model is not None:
            if args.probe is None:
                ap.error("PROBE is required with MODEL")
            rc = max(rc, run_parity(args.model, args.probe, args.rtol))
    except Malformed as e:
        print(f"MALFORMED: {e}")
        return 2
    except CheckFailed as e:
        print(f"FAIL: {e}")
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
