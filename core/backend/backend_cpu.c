/*
 * The CPU backend: the kernels of core/kernels/ over host memory, threaded by one pool.
 *
 * Scratch: kernels that need work space get it from one arena that grows to the largest
 * request seen and is then reused, so steady-state calls allocate nothing. Weights converted
 * to f32 at load are kept on a list and freed with the backend.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/act.h"
#include "kernels/gemm_bf16.h"
#include "kernels/gemm_panel.h"
#include "kernels/gemm_q8.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/resize.h"
#include "kernels/vec.h"
#include "kernels/vq.h"
#include "backend/backend.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"

/* A weight's copy made by cpu_weight; data 64-byte aligned. */
struct owned {
    struct owned *next;
    _Alignas(64) unsigned char data[];
};

struct cpu {
    struct pool *pool;
    void *scratch;
    size_t scratch_bytes;
    struct owned *owned; /* copies made by cpu_weight */
};

static struct cpu *cpu_of(struct backend *be)
{
    return be->ctx;
}

/* Work space of at least `bytes`, valid until the next call. Aborts only when the machine
 * has no memory left for a buffer the size of one layer's work, which model load sizes. */
static void *scratch(struct backend *be, size_t bytes)
{
    struct cpu *c = cpu_of(be);
    if (bytes > c->scratch_bytes) {
        free(c->scratch);
        c->scratch = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!c->scratch)
            abort();
        c->scratch_bytes = bytes;
    }
    return c->scratch;
}

static const float *f32_of(const struct tensor *t)
{
    return t ? t->data : NULL;
}

/* ---- memory -------------------------------------------------------------------------- */

static void *cpu_alloc(struct backend *be, size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p)
        memset(p, 0, bytes);
    return p;
}

static void cpu_release(struct backend *be, void *p)
{
    free(p);
}

static void cpu_copy(struct backend *be, void *dst, const void *src, size_t bytes)
{
    memmove(dst, src, bytes);
}

/* bytes of memory owned by the backend (freed with it), 64-byte aligned; NULL when none. */
static void *own(struct backend *be, size_t bytes)
{
    struct owned *o = aligned_alloc(64, (sizeof *o + bytes + 63) & ~(size_t)63);
    if (!o)
        return NULL;
    o->next = cpu_of(be)->owned;
    cpu_of(be)->owned = o;
    return o->data;
}

/* A copy of matrix src in the layout of the kernel that will multiply it (kernels/gemm_bf16.h's
 * panels for linear_bf16, kernels/gemm_panel.h's for linear), into dst. */
static int packed_copy(struct backend *be, struct tensor *dst, const struct tensor *src,
                       enum tensor_layout layout, struct err *e)
{
    int64_t k = src->ne[0], m = src->ne[1];
    int bf16 = layout == TENSOR_BF16_PANELS;
    void *p = own(be, bf16 ? gemm_bf16_packed_bytes(m, k) : gemm_panel_bytes(src->type, m, k));
    if (!p)
        return err_set(e, "tensor '%s': out of memory for its packed copy", src->name);
    struct pool *pool = cpu_of(be)->pool;
    if (bf16)
        gemm_bf16_pack(pool, p, tensor_row(src, 0), (size_t)src->nb[1], m, k);
    else
        gemm_panel_pack(pool, p, src->type, tensor_row(src, 0), (size_t)src->nb[1], m, k);
    dst->data = p;
    dst->layout = layout;
    return 0;
}

static int cpu_weight(struct backend *be, struct tensor *dst, const struct tensor *src,
                      enum backend_weight_use use, struct err *e)
{
    *dst = *src;
    /* packed where the CPU has the instructions the packed kernels are made for; elsewhere
     * (and for q8_0 for linear) the rows as stored serve */
    int packs = cpu_level() == CPU_LEVEL_AVX512;
    if (use == BACKEND_WEIGHT_LINEAR_BF16) {
        if (src->type != DTYPE_BF16 || src->n_dims != 2)
            return err_set(e, "tensor '%s': not a bf16 matrix", src->name);
        return packs ? packed_copy(be, dst, src, TENSOR_BF16_PANELS, e) : 0;
    }
    if (use == BACKEND_WEIGHT_MATRIX || use == BACKEND_WEIGHT_LINEAR) {
        if (!gemv_supports(src->type))
            return err_set(e, "tensor '%s': type %u cannot be used as a matrix", src->name,
                           (unsigned)src->type);
        if (use == BACKEND_WEIGHT_LINEAR && packs && gemm_panel_supports(src->type) &&
            src->n_dims == 2)
            return packed_copy(be, dst, src, TENSOR_PANELS, e);
        return 0;
    }
    if (src->type == DTYPE_F32)
        return 0;
    int64_t n = tensor_nelements(src);
    float *f = own(be, (size_t)n * sizeof(float));
    if (!f)
        return err_set(e, "tensor '%s': out of memory converting %lld values to f32", src->name,
                       (long long)n);
    for (int64_t r = 0; r < tensor_nrows(src); r++)
        dtype_to_f32(src->type, tensor_row(src, r), f + r * src->ne[0], src->ne[0]);
    int64_t ne[TENSOR_MAX_DIMS];
    memcpy(ne, src->ne, sizeof ne);
    if (tensor_init(dst, src->name, DTYPE_F32, src->n_dims, ne, f) != 0)
        return err_set(e, "tensor '%s': shape cannot be held as f32", src->name);
    return 0;
}

/* ---- linear algebra ------------------------------------------------------------------ */

static void cpu_linear(struct backend *be, float *y, const float *x, const struct tensor *w,
                       const struct tensor *b, int64_t n, int row_exact)
{
    struct cpu *c = cpu_of(be);
    if (w->layout == TENSOR_PANELS) { /* one form: rows exact at any n */
        gemm_panel_forward(c->pool, y, x, w->data, w->type, f32_of(b), n, tensor_nrows(w),
                           w->ne[0]);
        return;
    }
    if (row_exact) { /* GEMV_MAX_ROWS rows at a time, each row's sums as it gets alone */
        gemv_forward(c->pool, y, x, w, f32_of(b), (int)n);
        return;
    }
    size_t need = n > GEMV_MAX_ROWS ? matmul_scratch_bytes(c->pool, w) : 0;
    matmul_forward(c->pool, y, x, w, f32_of(b), n, need ? scratch(be, need) : NULL);
}

static void cpu_linear_bf16(struct backend *be, float *y, const float *x, const struct tensor *w,
                            const struct tensor *b, int64_t n, int row_exact)
{
    struct cpu *c = cpu_of(be);
    void *s = scratch(be, gemm_bf16_scratch_bytes(pool_threads(c->pool), w->ne[0]));
    if (w->layout == TENSOR_BF16_PANELS) /* one form: rows exact at any n */
        gemm_bf16_packed(c->pool, y, x, w->data, f32_of(b), n, tensor_nrows(w), w->ne[0], s);
    else
        gemm_bf16_rounded(c->pool, y, x, tensor_row(w, 0), (size_t)w->nb[1], f32_of(b), n,
                          tensor_nrows(w), w->ne[0], row_exact, s);
}

static void cpu_linear_q8(struct backend *be, float *y, const float *x, const struct tensor *w,
                          const struct tensor *b, int64_t n)
{
    struct cpu *c = cpu_of(be);
    void *s = scratch(be, gemm_q8_scratch_bytes(pool_threads(c->pool), w->ne[0]));
    gemm_q8_forward(c->pool, y, x, tensor_row(w, 0), (size_t)w->nb[1], f32_of(b), n,
                    tensor_nrows(w), w->ne[0], s);
}

static void cpu_matmul(struct backend *be, float *y, int64_t ldy, const float *a, int64_t lda,
                       const float *b, int64_t ldb, int64_t n, int64_t m, int64_t k, int b_trans,
                       float alpha, float beta)
{
    matmul_f32(cpu_of(be)->pool, y, ldy, a, lda, b, ldb, n, m, k, b_trans, alpha, beta);
}

/* ---- elementwise --------------------------------------------------------------------- */

static void cpu_add(struct backend *be, float *y, const float *a, const float *b, int64_t n)
{
    vec_add(y, a, b, n);
}

static void cpu_mul(struct backend *be, float *y, const float *a, const float *b, int64_t n)
{
    vec_mul(y, a, b, n);
}

static void cpu_scale(struct backend *be, float *y, const float *x, float s, int64_t n)
{
    vec_scale(y, x, s, n);
}

static void cpu_add_bias(struct backend *be, float *y, const float *x, const struct tensor *b,
                         int64_t n_rows, int64_t dim, int per_channel)
{
    if (per_channel)
        vec_add_bias_ch(y, x, f32_of(b), n_rows, dim);
    else
        vec_add_bias(y, x, f32_of(b), n_rows, dim);
}

static void cpu_unary(struct backend *be, enum backend_unary f, float *y, const float *x, int64_t n,
                      float param)
{
    struct pool *p = cpu_of(be)->pool;
    switch (f) {
    case BACKEND_GELU: act_gelu(p, y, x, n); break;
    case BACKEND_SILU: act_silu(p, y, x, n); break;
    case BACKEND_MISH: act_mish(p, y, x, n); break;
    case BACKEND_TANH: act_tanh(p, y, x, n); break;
    case BACKEND_EXP: act_exp(p, y, x, n); break;
    case BACKEND_SIN: act_sin(p, y, x, n); break;
    case BACKEND_ELU: act_elu(p, y, x, n, param); break;
    case BACKEND_LEAKY_RELU: act_leaky_relu(p, y, x, n, param); break;
    }
}

static void cpu_snake(struct backend *be, float *y, const float *x, const struct tensor *alpha,
                      int64_t n_ch, int64_t n_t)
{
    act_snake(cpu_of(be)->pool, y, x, f32_of(alpha), n_ch, n_t);
}

static void cpu_swiglu(struct backend *be, float *y, const float *x, int64_t n, int64_t dim)
{
    act_swiglu(cpu_of(be)->pool, y, x, n, dim);
}

/* ---- normalization ------------------------------------------------------------------- */

static void cpu_rms_norm(struct backend *be, float *y, const float *x, const struct tensor *w,
                         int64_t n, int64_t dim, float eps, int round_bf16)
{
    norm_rms(cpu_of(be)->pool, y, x, f32_of(w), n, dim, eps, round_bf16);
}

static void cpu_layer_norm(struct backend *be, float *y, const float *x, const struct tensor *w,
                           const struct tensor *b, int64_t n, int64_t dim, float eps)
{
    norm_layer(cpu_of(be)->pool, y, x, f32_of(w), f32_of(b), n, dim, eps);
}

static void cpu_group_norm(struct backend *be, float *y, const float *x, const struct tensor *w,
                           const struct tensor *b, int64_t n_ch, int64_t n_t, int n_groups,
                           float eps)
{
    norm_group(cpu_of(be)->pool, y, x, f32_of(w), f32_of(b), n_ch, n_t, n_groups, eps);
}

/* ---- attention ----------------------------------------------------------------------- */

static void cpu_softmax(struct backend *be, float *y, const float *x, int64_t n_rows, int64_t n,
                        const struct attn_mask *mask)
{
    attn_softmax(cpu_of(be)->pool, y, x, n_rows, n, mask);
}

static void cpu_rope(struct backend *be, const struct rope_table *t, float *x, int64_t n_rows,
                     int64_t row_stride, int n_head, int head_dim, const int64_t *pos, int64_t pos0)
{
    rope_apply(cpu_of(be)->pool, t, x, n_rows, row_stride, n_head, head_dim, pos, pos0);
}

static void cpu_attention(struct backend *be, float *out, const float *q, const void *k,
                          const void *v, int64_t n_q, int64_t n_kv, const struct attn_desc *d)
{
    struct pool *p = cpu_of(be)->pool;
    attn_forward(p, out, q, k, v, n_q, n_kv, d, scratch(be, attn_scratch_size(p, d->head_dim)));
}

/* ---- convolution and resizing -------------------------------------------------------- */

static int cpu_conv1d(struct backend *be, float *y, const float *x, const struct tensor *w,
                      const struct tensor *b, const struct conv_params *p, int64_t t_in,
                      struct err *e)
{
    struct cpu *c = cpu_of(be);
    size_t floats = conv_1d_scratch_floats(p, t_in, pool_threads(c->pool));
    return conv_1d(c->pool, y, x, f32_of(w), f32_of(b), p, t_in,
                   scratch(be, floats * sizeof(float)), e);
}

static int cpu_conv_transpose1d(struct backend *be, float *y, const float *x,
                                const struct tensor *w, const struct tensor *b,
                                const struct conv_transpose_params *p, int64_t t_in, struct err *e)
{
    struct cpu *c = cpu_of(be);
    size_t floats = conv_transpose_1d_scratch_floats(p, t_in, pool_threads(c->pool));
    return conv_transpose_1d(c->pool, y, x, f32_of(w), f32_of(b), p, t_in,
                             scratch(be, floats * sizeof(float)), e);
}

static void cpu_avg_pool(struct backend *be, float *y, const float *x, int64_t n_ch, int64_t n_t,
                         int kernel, int stride, int pad_right)
{
    resize_avg_pool(y, x, n_ch, n_t, kernel, stride, pad_right);
}

static void cpu_upsample_nearest(struct backend *be, float *y, const float *x, int64_t n_ch,
                                 int64_t t_in, int64_t t_out)
{
    resize_nearest(y, x, n_ch, t_in, t_out);
}

/* ---- vector quantization ------------------------------------------------------------- */

static void cpu_vq_norms(struct backend *be, float *norms, const struct tensor *codebook)
{
    vq_codebook_norms(norms, f32_of(codebook), codebook->ne[1], codebook->ne[0]);
}

static void cpu_vq_argmin(struct backend *be, int32_t *idx, const float *x, int64_t n,
                          const struct tensor *codebook, const float *norms)
{
    struct cpu *c = cpu_of(be);
    int64_t j = codebook->ne[1], d = codebook->ne[0];
    size_t floats = vq_scratch_floats(n, j, pool_threads(c->pool));
    vq_argmin(c->pool, idx, NULL, x, n, f32_of(codebook), norms, j, d,
              scratch(be, floats * sizeof(float)));
}

/* ---- spectra ------------------------------------------------------------------------- */

static int cpu_stft(struct backend *be, const struct spectral_plan *p, float *spec,
                    int64_t n_frames, const float *x, int64_t len, struct err *e)
{
    struct cpu *c = cpu_of(be);
    size_t floats = spectral_stft_scratch_floats(p, n_frames, pool_threads(c->pool));
    return spectral_stft(c->pool, p, spec, n_frames, x, len, scratch(be, floats * sizeof(float)),
                         e);
}

static int cpu_istft(struct backend *be, const struct spectral_plan *p, float *y, int64_t len,
                     const float *spec, int64_t n_frames, struct err *e)
{
    struct cpu *c = cpu_of(be);
    size_t floats = spectral_istft_scratch_floats(p, n_frames);
    return spectral_istft(c->pool, p, y, len, spec, n_frames, scratch(be, floats * sizeof(float)),
                          e);
}

/* ---- life cycle ---------------------------------------------------------------------- */

static void cpu_destroy(struct backend *be)
{
    struct cpu *c = cpu_of(be);
    while (c->owned) {
        struct owned *next = c->owned->next;
        free(c->owned);
        c->owned = next;
    }
    pool_free(c->pool);
    free(c->scratch);
    free(c);
    free(be);
}

static const struct backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .weight = cpu_weight,
    .linear = cpu_linear,
    .linear_bf16 = cpu_linear_bf16,
    .linear_q8 = cpu_linear_q8,
    .matmul = cpu_matmul,
    .add = cpu_add,
    .mul = cpu_mul,
    .scale = cpu_scale,
    .add_bias = cpu_add_bias,
    .unary = cpu_unary,
    .snake = cpu_snake,
    .swiglu = cpu_swiglu,
    .rms_norm = cpu_rms_norm,
    .layer_norm = cpu_layer_norm,
    .group_norm = cpu_group_norm,
    .softmax = cpu_softmax,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .conv1d = cpu_conv1d,
    .conv_transpose1d = cpu_conv_transpose1d,
    .avg_pool = cpu_avg_pool,
    .upsample_nearest = cpu_upsample_nearest,
    .vq_norms = cpu_vq_norms,
    .vq_argmin = cpu_vq_argmin,
    .stft = cpu_stft,
    .istft = cpu_istft,
};

struct backend *backend_cpu_create(int n_threads, struct err *e)
{
    if (n_threads < 1)
        return err_set(e, "cpu backend: thread count %d must be at least 1", n_threads), NULL;
    struct backend *be = calloc(1, sizeof *be);
    struct cpu *c = calloc(1, sizeof *c);
    if (c)
        c->pool = pool_create(n_threads);
    if (!be || !c || !c->pool) {
        if (c)
            pool_free(c->pool);
        free(c);
        free(be);
        err_set(e, "cpu backend: cannot start %d threads", n_threads);
        return NULL;
    }
    be->ops = &cpu_ops;
    be->ctx = c;
    return be;
}
