/*
 * attn_simd — the bodies of attn's vector kernels, written once against vmath.h and compiled
 * by attn_avx2.c and attn_avx512.c. Not a public header.
 *
 * Shape letters as in attn.h: D head dimension, W = VM_W lanes, C = ATTN_CHUNK keys.
 *
 * Scheme of a tile (W (query, head) pairs sharing one KV head): the W query vectors are
 * held transposed, qt[d] = the d-th element of every lane's query, so that one key vector
 * scores all W queries with D FMAs of a broadcast key element — no horizontal sums, and the
 * key (widened from bf16/f16 once) is reused by all W lanes: the 16 query heads of GLM-4's
 * GQA group in decode, or 16 query rows of one head in prefill. Probabilities and the
 * output accumulators have the same layout (acc[d] = W lanes of output element d), so
 * P·V is again broadcast FMAs. Keys go by chunks of C with a running max per lane; the
 * accumulators are rescaled only when a lane's max grows.
 *
 * Each lane's numbers depend only on its own query and keys, in a fixed order (d ascending
 * inside a dot product, keys ascending inside a sum), never on the other lanes of its tile.
 */
#include "kernels/attn.h"
#include "kernels/vmath.h"

/* The nc key (or value) rows j0.. of KV head g as f32 rows at *rows + c·(*rs): f32 rows in
 * place, f16/bf16 rows widened into buf [C][D]. */
VM_INLINE void kv_rows(const float **rows, int64_t *rs, float *buf, const uint8_t *base,
                       int64_t stride, const struct attn_job *jb, int64_t g, int64_t j0, int nc)
{
    const int hd = jb->head_dim;
    if (jb->kv_type == DTYPE_F32) {
        *rows = (const float *)base + j0 * stride + g * hd;
        *rs = stride;
        return;
    }
    for (int c = 0; c < nc; c++) {
        const uint16_t *src = (const uint16_t *)base + (j0 + c) * stride + g * hd;
        float *dst = buf + (int64_t)c * hd;
        int d = 0;
        if (jb->kv_type == DTYPE_BF16) {
            for (; d + VM_W <= hd; d += VM_W)
                vf_store(dst + d, vf_load_bf16(src + d));
            for (; d < hd; d++) {
                uint32_t u = (uint32_t)src[d] << 16;
                memcpy(dst + d, &u, 4);
            }
        } else {
            for (; d + VM_W <= hd; d += VM_W)
                vf_store(dst + d, vf_load_f16(src + d));
            for (; d < hd; d++)
                dst[d] = dtype_f16_to_f32(src[d]);
        }
    }
    *rows = buf;
    *rs = hd;
}

/* s[c] = qt · k_c for the nc keys at k + c·ks, 8 keys at a time (8 independent FMA
 * chains). */
VM_INLINE void dots(float *s, const float *qt, const float *k, int64_t ks, int nc, int hd)
{
    int c = 0;
    for (; c + 8 <= nc; c += 8) {
        const float *k0 = k + c * ks;
        vf a0 = vf_zero(), a1 = vf_zero(), a2 = vf_zero(), a3 = vf_zero();
        vf a4 = vf_zero(), a5 = vf_zero(), a6 = vf_zero(), a7 = vf_zero();
        for (int d = 0; d < hd; d++) {
            vf q = vf_load(qt + d * VM_W);
            a0 = vf_fma(q, vf_set1(k0[d]), a0);
            a1 = vf_fma(q, vf_set1(k0[ks + d]), a1);
            a2 = vf_fma(q, vf_set1(k0[2 * ks + d]), a2);
            a3 = vf_fma(q, vf_set1(k0[3 * ks + d]), a3);
            a4 = vf_fma(q, vf_set1(k0[4 * ks + d]), a4);
            a5 = vf_fma(q, vf_set1(k0[5 * ks + d]), a5);
            a6 = vf_fma(q, vf_set1(k0[6 * ks + d]), a6);
            a7 = vf_fma(q, vf_set1(k0[7 * ks + d]), a7);
        }
        vf_store(s + (c + 0) * VM_W, a0);
        vf_store(s + (c + 1) * VM_W, a1);
        vf_store(s + (c + 2) * VM_W, a2);
        vf_store(s + (c + 3) * VM_W, a3);
        vf_store(s + (c + 4) * VM_W, a4);
        vf_store(s + (c + 5) * VM_W, a5);
        vf_store(s + (c + 6) * VM_W, a6);
        vf_store(s + (c + 7) * VM_W, a7);
    }
    for (; c < nc; c++) {
        const float *k0 = k + c * ks;
        vf a0 = vf_zero();
        for (int d = 0; d < hd; d++)
            a0 = vf_fma(vf_load(qt + d * VM_W), vf_set1(k0[d]), a0);
        vf_store(s + c * VM_W, a0);
    }
}

/* acc[d] += Σ_c p[c]·v_c[d] for the nc value rows at v + c·vs, VM_W output elements (one
 * vector each) at a time. */
VM_INLINE void accumulate(float *acc, const float *p, const float *v, int64_t vs, int nc, int hd)
{
    int d0 = 0;
    for (; d0 + VM_W <= hd; d0 += VM_W) {
        vf a[VM_W];
#pragma GCC unroll 16
        for (int k = 0; k < VM_W; k++)
            a[k] = vf_load(acc + (d0 + k) * VM_W);
        const float *vc = v + d0;
        for (int c = 0; c < nc; c++, vc += vs) {
            vf pc = vf_load(p + c * VM_W);
#pragma GCC unroll 16
            for (int k = 0; k < VM_W; k++)
                a[k] = vf_fma(pc, vf_set1(vc[k]), a[k]);
        }
#pragma GCC unroll 16
        for (int k = 0; k < VM_W; k++)
            vf_store(acc + (d0 + k) * VM_W, a[k]);
    }
    for (; d0 < hd; d0++) {
        vf a = vf_load(acc + d0 * VM_W);
        for (int c = 0; c < nc; c++)
            a = vf_fma(vf_load(p + c * VM_W), vf_set1(v[c * vs + d0]), a);
        vf_store(acc + d0 * VM_W, a);
    }
}

void VM_NAME(attn, tile)(const struct attn_job *jb, int64_t tile, float *sc)
{
    const int hd = jb->head_dim;
    const int64_t g = tile / jb->tiles_per_head;
    float *qt = sc, *acc = qt + hd * VM_W, *s = acc + hd * VM_W;
    float *buf = s + ATTN_CHUNK * VM_W, *end_f = buf + ATTN_CHUNK * hd, *inv = end_f + VM_W;
    int n_lanes;
    const int64_t jmax = attn_tile_gather(jb, tile, qt, end_f, &n_lanes);
    memset(acc, 0, sizeof(float) * (size_t)hd * VM_W);

    const vf ninf = vf_set1(-INFINITY), one = vf_set1(1.0f), end = vf_load(end_f);
    const vf scale = vf_set1(jb->scale), bias = vf_set1(jb->bias);
    vf m = ninf, l = vf_zero();
    const float *rows;
    int64_t rs;
    for (int64_t j0 = 0; j0 < jmax; j0 += ATTN_CHUNK) {
        const int nc = (int)(jmax - j0 < ATTN_CHUNK ? jmax - j0 : ATTN_CHUNK);
        kv_rows(&rows, &rs, buf, jb->k, jb->k_stride, jb, g, j0, nc);
        dots(s, qt, rows, rs, nc, hd);

        /* scale, bias, mask (key index >= the lane's end), running max */
        vf mx = m;
        for (int c = 0; c < nc; c++) {
            vf x = vf_add(vf_mul(vf_load(s + c * VM_W), scale), bias);
            x = vf_select(vf_ge(vf_set1((float)(j0 + c)), end), ninf, x);
            vf_store(s + c * VM_W, x);
            mx = vf_max(mx, x);
        }
        /* a lane with nothing visible yet keeps max −inf; it subtracts 0 instead, so that
         * its weights come out as e^−inf = 0 and not NaN */
        vm none = vf_eq(mx, ninf);
        vf mu = vf_select(none, vf_zero(), mx);
        vf alpha = vf_select(vf_eq(m, ninf), one, vm_exp(vf_sub(m, mu)));
        if (vm_any(vf_neq(alpha, one))) {
            l = vf_mul(l, alpha);
            for (int d = 0; d < hd; d++)
                vf_store(acc + d * VM_W, vf_mul(vf_load(acc + d * VM_W), alpha));
        }
        for (int c = 0; c < nc; c++) {
            vf p = vm_exp(vf_sub(vf_load(s + c * VM_W), mu));
            l = vf_add(l, p);
            vf_store(s + c * VM_W, p);
        }
        m = mx;

        kv_rows(&rows, &rs, buf, jb->v, jb->v_stride, jb, g, j0, nc);
        accumulate(acc, s, rows, rs, nc, hd);
    }
    vf_store(inv, vf_select(vf_gt(l, vf_zero()), vf_div(one, l), vf_zero()));
    attn_tile_scatter(jb, tile, acc, inv, n_lanes);
}

void VM_NAME(attn, softmax_row)(float *out, const float *x, int64_t end, int64_t n)
{
    int64_t i;
    if (end > 0) {
        vf mx = vf_set1(-INFINITY);
        for (i = 0; i + VM_W <= end; i += VM_W)
            mx = vf_max(mx, vf_load(x + i));
        if (i < end)
            mx = vf_max(mx, vf_select(vm_lanes((int)(end - i)), vf_load_n(x + i, (int)(end - i)),
                                      vf_set1(-INFINITY)));
        const float m = vf_hmax(mx);
        const vf mv = vf_set1(m == -INFINITY ? 0.0f : m);
        vf sum = vf_zero();
        for (i = 0; i + VM_W <= end; i += VM_W) {
            vf e = vm_exp(vf_sub(vf_load(x + i), mv));
            vf_store(out + i, e);
            sum = vf_add(sum, e);
        }
        if (i < end) {
            int r = (int)(end - i);
            vf e = vf_select(vm_lanes(r), vm_exp(vf_sub(vf_load_n(x + i, r), mv)), vf_zero());
            vf_store_n(out + i, e, r);
            sum = vf_add(sum, e);
        }
        const float t = vf_hsum(sum);
        const vf inv = vf_set1(t > 0 ? 1.0f / t : 0.0f);
        for (i = 0; i + VM_W <= end; i += VM_W)
            vf_store(out + i, vf_mul(vf_load(out + i), inv));
        if (i < end)
            vf_store_n(out + i, vf_mul(vf_load_n(out + i, (int)(end - i)), inv), (int)(end - i));
    } else {
        end = 0;
    }
    for (i = end; i < n; i++)
        out[i] = 0.0f;
}
