/*
 * backend — the table of operations that model code calls, so that another backend (CUDA)
 * can replace the CPU one without touching model code.
 *
 * Rules for model code:
 * - Activations, caches and scratch live in memory from backend_alloc() and are moved to and
 *   from the host only with backend_upload()/backend_download(). Model code never reads or
 *   writes them directly, so a device backend may keep them off the host.
 * - Weights are tensors from a model file, prepared once at load by backend_weight(): the CPU
 *   backend uses matrices where they lie in the mapping, packs those only its linear
 *   operations multiply into its kernels' layouts (enum backend_weight_use), and converts
 *   what its kernels need as f32 (vectors, convolution kernels, codebooks) into memory it
 *   owns.
 * - Host-side tables (struct rope_table, struct spectral_plan) are built once by model code
 *   and passed by pointer; a device backend copies one to the device on first use.
 * - One backend serves one thread at a time (its pool runs one loop at a time); the engine
 *   gives each worker thread its own backend over the same weights.
 *
 * Operations that can refuse their arguments (convolution and spectral shapes) return -1
 * with a message; the others are given shapes that model code has already validated.
 * Shapes follow the kernels' headers in core/kernels/, where each operation is defined.
 */
#ifndef PARLEY_BACKEND_H
#define PARLEY_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/attn.h"
#include "kernels/conv.h"
#include "kernels/rope.h"
#include "kernels/spectral.h"
#include "runtime/err.h"
#include "runtime/tensor.h"

struct backend;

/* How model code will use a weight: read as stored (matrices for any operation), as f32
 * values (everything else), or as a matrix that only `linear` (LINEAR) or only `linear_bf16`
 * (LINEAR_BF16, a bf16 matrix) multiplies. Those two the backend may keep in a layout of its
 * own, a copy (the CPU one, on AVX-512 CPUs: kernels/gemm_panel.h's panels for f32 and f16,
 * kernels/gemm_bf16.h's for bf16); when the prepared tensor's data is not the file's, the
 * file's pages may be dropped. `linear` over such a layout is row-exact: each row's result
 * does not depend on n or on the other rows. */
enum backend_weight_use {
    BACKEND_WEIGHT_MATRIX = 0,
    BACKEND_WEIGHT_F32 = 1,
    BACKEND_WEIGHT_LINEAR_BF16 = 2,
    BACKEND_WEIGHT_LINEAR = 3,
};

/* Elementwise functions of one tensor, with the parameter where one applies. */
enum backend_unary {
    BACKEND_GELU, /* exact erf form */
    BACKEND_SILU,
    BACKEND_MISH,
    BACKEND_TANH,
    BACKEND_EXP,
    BACKEND_SIN,
    BACKEND_ELU,        /* param: alpha */
    BACKEND_LEAKY_RELU, /* param: negative slope */
};

struct backend_ops {
    const char *name;
    void (*destroy)(struct backend *be);

    /* ---- memory ---- */
    void *(*alloc)(struct backend *be, size_t bytes); /* zeroed; NULL when out of memory */
    void (*release)(struct backend *be, void *p);
    void (*upload)(struct backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(struct backend *be, void *dst, const void *src, size_t bytes);
    int (*weight)(struct backend *be, struct tensor *dst, const struct tensor *src,
                  enum backend_weight_use use, struct err *e);

    /* ---- linear algebra ---- */
    /* y[n][M] = x[n][K] · Wᵀ (+ b), W ne = {K, M} of any type, b f32 [M] or NULL;
     * row_exact: each row's result is independent of n and of the other rows (decode steps),
     * otherwise many rows may take a faster form (prefill) */
    void (*linear)(struct backend *be, float *y, const float *x, const struct tensor *w,
                   const struct tensor *b, int64_t n, int row_exact);
    /* the same for bf16 W with x rounded to bf16 first (nearest even), as a model that runs in
     * bf16 feeds its linear layers */
    void (*linear_bf16)(struct backend *be, float *y, const float *x, const struct tensor *w,
                        const struct tensor *b, int64_t n, int row_exact);
    /* the same for q8_0 W with x quantized per block of 32 as q8_0 activations are
     * (kernels/gemm_q8.h: d = max|x| / 127, q = round half to even of x / d), exact integer
     * block dot products combined in one fixed order: each row's bits are independent of n,
     * of the other rows and of the thread count (prefill and decode alike) */
    void (*linear_q8)(struct backend *be, float *y, const float *x, const struct tensor *w,
                      const struct tensor *b, int64_t n);
    /* y[n][m] = alpha · a[n][k] · (b[m][k]ᵀ or b[k][m]) + beta · y, leading dimensions given */
    void (*matmul)(struct backend *be, float *y, int64_t ldy, const float *a, int64_t lda,
                   const float *b, int64_t ldb, int64_t n, int64_t m, int64_t k, int b_trans,
                   float alpha, float beta);

    /* ---- elementwise ---- */
    void (*add)(struct backend *be, float *y, const float *a, const float *b, int64_t n);
    void (*mul)(struct backend *be, float *y, const float *a, const float *b, int64_t n);
    void (*scale)(struct backend *be, float *y, const float *x, float s, int64_t n);
    /* y[r][d] = x[r][d] + b[d] (rows) or y[c][t] = x[c][t] + b[c] (channels) */
    void (*add_bias)(struct backend *be, float *y, const float *x, const struct tensor *b,
                     int64_t n_rows, int64_t dim, int per_channel);
    void (*unary)(struct backend *be, enum backend_unary f, float *y, const float *x, int64_t n,
                  float param);
    /* x [C][T], alpha f32 [C] */
    void (*snake)(struct backend *be, float *y, const float *x, const struct tensor *alpha,
                  int64_t n_ch, int64_t n_t);
    /* x [n][2·dim] = gate | up  ->  y [n][dim] = SiLU(gate) · up */
    void (*swiglu)(struct backend *be, float *y, const float *x, int64_t n, int64_t dim);

    /* ---- normalization ---- */
    void (*rms_norm)(struct backend *be, float *y, const float *x, const struct tensor *w,
                     int64_t n, int64_t dim, float eps, int round_bf16);
    void (*layer_norm)(struct backend *be, float *y, const float *x, const struct tensor *w,
                       const struct tensor *b, int64_t n, int64_t dim, float eps);
    void (*group_norm)(struct backend *be, float *y, const float *x, const struct tensor *w,
                       const struct tensor *b, int64_t n_ch, int64_t n_t, int n_groups, float eps);

    /* ---- attention ---- */
    void (*softmax)(struct backend *be, float *y, const float *x, int64_t n_rows, int64_t n,
                    const struct attn_mask *mask);
    void (*rope)(struct backend *be, const struct rope_table *t, float *x, int64_t n_rows,
                 int64_t row_stride, int n_head, int head_dim, const int64_t *pos, int64_t pos0);
    void (*attention)(struct backend *be, float *out, const float *q, const void *k, const void *v,
                      int64_t n_q, int64_t n_kv, const struct attn_desc *d);

    /* ---- convolution and resizing: activations [C][T] ---- */
    int (*conv1d)(struct backend *be, float *y, const float *x, const struct tensor *w,
                  const struct tensor *b, const struct conv_params *p, int64_t t_in, struct err *e);
    int (*conv_transpose1d)(struct backend *be, float *y, const float *x, const struct tensor *w,
                            const struct tensor *b, const struct conv_transpose_params *p,
                            int64_t t_in, struct err *e);
    void (*avg_pool)(struct backend *be, float *y, const float *x, int64_t n_ch, int64_t n_t,
                     int kernel, int stride, int pad_right);
    void (*upsample_nearest)(struct backend *be, float *y, const float *x, int64_t n_ch,
                             int64_t t_in, int64_t t_out);

    /* ---- vector quantization: idx[n] = argmin_j |x[n] − codebook[j]|², norms = |c_j|² ---- */
    void (*vq_norms)(struct backend *be, float *norms, const struct tensor *codebook);
    void (*vq_argmin)(struct backend *be, int32_t *idx, const float *x, int64_t n,
                      const struct tensor *codebook, const float *norms);

    /* ---- spectra: spec [2·bins][frames] (real rows, then imaginary rows) ---- */
    int (*stft)(struct backend *be, const struct spectral_plan *p, float *spec, int64_t n_frames,
                const float *x, int64_t len, struct err *e);
    int (*istft)(struct backend *be, const struct spectral_plan *p, float *y, int64_t len,
                 const float *spec, int64_t n_frames, struct err *e);
};

struct backend {
    const struct backend_ops *ops;
    void *ctx; /* the implementation's own state */
};

/* The CPU backend with n_threads threads (>= 1) for its kernels and OpenBLAS. */
struct backend *backend_cpu_create(int n_threads, struct err *e);

static inline void backend_free(struct backend *be)
{
    if (be)
        be->ops->destroy(be);
}

#endif
