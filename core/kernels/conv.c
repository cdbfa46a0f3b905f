/*
 * conv — see conv.h. Shape letters: C_in, C_out, K taps, T_in / T_out frames, G groups,
 * R = C_in*K rows of the im2col matrix, Tb columns per tile.
 *
 * conv_1d: out[C_out][T_out] = W[C_out][R] x col[R][T_out] per group, where col is the
 * im2col expansion of the padded input. The time axis is cut into tiles of Tb columns (Tb
 * from the shape alone: a column budget that keeps one tile's col in L2-ish memory, and at
 * least CONV_TILES_MIN tiles for large T so that every thread gets work; for short T the
 * output channels are split too); each pool thread owns one scratch slot and a contiguous run
 * of tasks, builds the tile's col and calls sgemm.
 * A 1x1 unpadded stride-1 convolution needs no col at all: the input is already the matrix.
 *
 * conv_transpose_1d: col[C_out*K][Ti] = W^T x x[:, chunk] (sgemm split into fixed row blocks),
 * then col2im adds col into the output rows (split over output channels). Input chunks are
 * processed in order, so every output element accumulates its terms in the same order
 * whatever the thread count.
 */
#include "kernels/blas.h"
#include "kernels/conv.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>

#define CONV_TILE_FLOATS   ((int64_t)1 << 20) /* col floats per tile (4 MB) */
#define CONV_TILES_MIN     4                  /* split large T into at least this many tiles */
#define CONV_TILE_MIN_COLS 128                /* ...but never into tiles narrower than this */
#define CONV_TASKS_MIN     4                  /* fewer tiles than this: split channels too */
#define CONV_ROW_BLOCK_MIN 64                 /* ...into blocks of at least this many */
#define CONV_T_BLOCKS      8                  /* transposed conv: row blocks of the sgemm */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static int64_t round_up(int64_t a, int64_t m)
{
    return (a + m - 1) / m * m;
}

struct conv_params conv_params_make(int c_in, int c_out, int k, int stride, int dilation, int pad,
                                    int groups)
{
    return (struct conv_params){ .c_in = c_in,
                                 .c_out = c_out,
                                 .k = k,
                                 .stride = stride,
                                 .dilation = dilation,
                                 .pad_left = pad,
                                 .pad_right = pad,
                                 .groups = groups,
                                 .pad_mode = CONV_PAD_ZEROS };
}

int64_t conv_1d_out_len(const struct conv_params *p, int64_t t_in)
{
    int64_t span = (int64_t)p->dilation * (p->k - 1) + 1;
    int64_t padded = t_in + p->pad_left + p->pad_right;
    if (t_in < 1 || p->stride < 1 || padded < span)
        return 0;
    return (padded - span) / p->stride + 1;
}

static int conv_direct(const struct conv_params *p)
{
    return p->k == 1 && p->stride == 1 && p->pad_left == 0 && p->pad_right == 0;
}

/* Columns per tile: at most the budget and at most 1/CONV_TILES_MIN of T (but not below
 * CONV_TILE_MIN_COLS), then evened out so that the last tile is not a sliver. */
static int64_t conv_tile_cols(int64_t rows, int64_t t_out)
{
    int64_t by_budget = max64(16, CONV_TILE_FLOATS / rows / 16 * 16);
    int64_t by_split =
        max64(CONV_TILE_MIN_COLS, round_up((t_out + CONV_TILES_MIN - 1) / CONV_TILES_MIN, 16));
    int64_t most = min64(by_budget, by_split);
    int64_t n_tiles = (t_out + most - 1) / most;
    return min64(most, round_up((t_out + n_tiles - 1) / n_tiles, 8));
}

size_t conv_1d_scratch_floats(const struct conv_params *p, int64_t t_in, int n_threads)
{
    int64_t t_out = conv_1d_out_len(p, t_in);
    if (t_out <= 0 || conv_direct(p))
        return 0;
    int64_t rows = (int64_t)p->c_in * p->k;
    return (size_t)(n_threads < 1 ? 1 : n_threads) * (size_t)rows *
           (size_t)conv_tile_cols(rows, t_out);
}

static int conv_check(const struct conv_params *p, int64_t t_in, struct err *e)
{
    if (p->c_in < 1 || p->c_out < 1 || p->k < 1 || p->stride < 1 || p->dilation < 1 ||
        p->pad_left < 0 || p->pad_right < 0 || p->groups < 1)
        return err_set(e,
                       "conv_1d: invalid parameters (c_in %d, c_out %d, k %d, stride %d, "
                       "dilation %d, pad %d/%d, groups %d)",
                       p->c_in, p->c_out, p->k, p->stride, p->dilation, p->pad_left, p->pad_right,
                       p->groups);
    if (p->c_in % p->groups || p->c_out % p->groups)
        return err_set(e, "conv_1d: channels %d -> %d not divisible by groups %d", p->c_in,
                       p->c_out, p->groups);
    if (p->pad_mode != CONV_PAD_ZEROS && p->pad_mode != CONV_PAD_REFLECT)
        return err_set(e, "conv_1d: unknown padding mode %d", (int)p->pad_mode);
    if (p->pad_mode == CONV_PAD_REFLECT && (p->pad_left >= t_in || p->pad_right >= t_in))
        return err_set(e, "conv_1d: reflection pad %d/%d needs more than %lld input frames",
                       p->pad_left, p->pad_right, (long long)t_in);
    if (conv_1d_out_len(p, t_in) <= 0)
        return err_set(e,
                       "conv_1d: %lld input frames are too few for kernel %d, dilation %d, "
                       "padding %d/%d",
                       (long long)t_in, p->k, p->dilation, p->pad_left, p->pad_right);
    return 0;
}

/* First j in [0, n) with 0 <= a + j*s, and first j with a + j*s >= t (both clamped to n). */
static void valid_range(int64_t a, int64_t s, int64_t t, int64_t n, int64_t *lo, int64_t *hi)
{
    int64_t l = a >= 0 ? 0 : (-a + s - 1) / s;
    int64_t h = t - a > 0 ? (t - a + s - 1) / s : 0;
    l = min64(l, n);
    h = min64(max64(h, l), n);
    *lo = l;
    *hi = h;
}

/* col[ci*K + k][j] = xpad[ci][(t0 + j)*stride + k*dilation] for j < nb. */
static void im2col(float *col, const float *x, const struct conv_params *p, int64_t t_in,
                   int64_t t0, int64_t nb)
{
    int64_t s = p->stride;
    for (int ci = 0; ci < p->c_in; ci++) {
        const float *xr = x + (int64_t)ci * t_in;
        for (int k = 0; k < p->k; k++) {
            float *row = col + ((int64_t)ci * p->k + k) * nb;
            int64_t a = t0 * s + (int64_t)k * p->dilation - p->pad_left;
            int64_t lo, hi;
            valid_range(a, s, t_in, nb, &lo, &hi);
            if (p->pad_mode == CONV_PAD_REFLECT) {
                /* pads < t_in, so one reflection always lands inside */
                for (int64_t j = 0; j < lo; j++)
                    row[j] = xr[-(a + j * s)];
                for (int64_t j = hi; j < nb; j++)
                    row[j] = xr[2 * (t_in - 1) - (a + j * s)];
            } else {
                memset(row, 0, (size_t)lo * sizeof *row);
                memset(row + hi, 0, (size_t)(nb - hi) * sizeof *row);
            }
            if (s == 1) {
                memcpy(row + lo, xr + a + lo, (size_t)(hi - lo) * sizeof *row);
            } else {
                for (int64_t j = lo; j < hi; j++)
                    row[j] = xr[a + j * s];
            }
        }
    }
}

/* Output-channel blocks per tile: when T alone gives too few tiles to keep threads busy
 * (the flow decoder's mid blocks run at 34 frames), each tile's GEMM is also cut into row
 * blocks of at least CONV_ROW_BLOCK_MIN channels, each a task that builds its own col. */
static int64_t conv_row_block(const struct conv_params *p, int64_t n_tiles)
{
    if (p->groups != 1 || n_tiles >= CONV_TASKS_MIN)
        return p->c_out;
    int64_t blocks =
        min64((CONV_TASKS_MIN + n_tiles - 1) / n_tiles, max64(1, p->c_out / CONV_ROW_BLOCK_MIN));
    return min64(p->c_out, round_up((p->c_out + blocks - 1) / blocks, 16));
}

struct conv_job {
    const struct conv_params *p;
    float *out;
    const float *x, *w, *bias;
    int64_t t_in, t_out, rows, tb, n_tiles, row_block, n_row_blocks;
    int n_slots, direct;
    float *scratch;
};

/* Output channels [co0, co0 + nco) of tile `tile`; col holds the tile's im2col already. */
static void conv_1d_task(const struct conv_job *j, int64_t tile, int64_t co0, int64_t nco,
                         const float *col)
{
    const struct conv_params *p = j->p;
    int64_t t0 = tile * j->tb, nb = min64(j->tb, j->t_out - t0);
    int cig = p->c_in / p->groups, cog = p->c_out / p->groups;
    int64_t kd = (int64_t)cig * p->k;
    const float *b = j->direct ? j->x + t0 : col;
    int64_t ldb = j->direct ? j->t_in : nb;
    float beta = 0.0f;
    if (j->bias) {
        for (int64_t co = co0; co < co0 + nco; co++) {
            float *o = j->out + co * j->t_out + t0, v = j->bias[co];
            for (int64_t t = 0; t < nb; t++)
                o[t] = v;
        }
        beta = 1.0f;
    }
    if (p->groups == 1) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nco, (int)nb, (int)kd, 1.0f,
                    j->w + co0 * kd, (int)kd, b, (int)ldb, beta, j->out + co0 * j->t_out + t0,
                    (int)j->t_out);
        return;
    }
    for (int g = 0; g < p->groups; g++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cog, (int)nb, (int)kd, 1.0f,
                    j->w + (int64_t)g * cog * kd, (int)kd, b + g * kd * ldb, (int)ldb, beta,
                    j->out + (int64_t)g * cog * j->t_out + t0, (int)j->t_out);
}

/* Slot s runs tasks [s*n/S, (s+1)*n/S) of the n = tiles x row blocks, tile-major. */
static void conv_1d_slots(void *arg, int64_t begin, int64_t end)
{
    const struct conv_job *j = arg;
    int64_t n = j->n_tiles * j->n_row_blocks;
    for (int64_t s = begin; s < end; s++) {
        float *col = j->direct ? NULL : j->scratch + s * j->rows * j->tb;
        int64_t built = -1;
        for (int64_t task = s * n / j->n_slots; task < (s + 1) * n / j->n_slots; task++) {
            int64_t tile = task / j->n_row_blocks, co0 = task % j->n_row_blocks * j->row_block;
            if (!j->direct && tile != built) {
                int64_t t0 = tile * j->tb;
                im2col(col, j->x, j->p, j->t_in, t0, min64(j->tb, j->t_out - t0));
                built = tile;
            }
            conv_1d_task(j, tile, co0, min64(j->row_block, j->p->c_out - co0), col);
        }
    }
}

int conv_1d(struct pool *pool, float *out, const float *x, const float *w, const float *bias,
            const struct conv_params *p, int64_t t_in, float *scratch, struct err *e)
{
    if (conv_check(p, t_in, e))
        return -1;
    struct conv_job j = { .p = p,
                          .out = out,
                          .x = x,
                          .w = w,
                          .bias = bias,
                          .t_in = t_in,
                          .t_out = conv_1d_out_len(p, t_in),
                          .rows = (int64_t)p->c_in * p->k,
                          .n_slots = pool_threads(pool),
                          .direct = conv_direct(p),
                          .scratch = scratch };
    assert(j.t_out < INT32_MAX && j.rows < INT32_MAX); /* sgemm takes int dimensions */
    assert(j.direct || scratch);
    j.tb = conv_tile_cols(j.rows, j.t_out);
    j.n_tiles = (j.t_out + j.tb - 1) / j.tb;
    j.row_block = conv_row_block(p, j.n_tiles);
    j.n_row_blocks = (p->c_out + j.row_block - 1) / j.row_block;
    blas_threads(1);
    pool_for(pool, j.n_slots, 1, conv_1d_slots, &j);
    return 0;
}

/* ---- transposed convolution ---------------------------------------------------------------- */

int64_t conv_transpose_1d_out_len(const struct conv_transpose_params *p, int64_t t_in)
{
    if (t_in < 1)
        return 0;
    int64_t n = (t_in - 1) * p->stride - 2 * (int64_t)p->pad + (int64_t)p->dilation * (p->k - 1) +
                p->out_pad + 1;
    return n > 0 ? n : 0;
}

static int64_t convt_chunk_cols(const struct conv_transpose_params *p, int64_t t_in)
{
    int64_t rows = (int64_t)p->c_out * p->k;
    return min64(max64(16, CONV_TILE_FLOATS / rows), t_in);
}

size_t conv_transpose_1d_scratch_floats(const struct conv_transpose_params *p, int64_t t_in,
                                        int n_threads)
{
    (void)n_threads; /* one shared col chunk; threads split its rows */
    if (conv_transpose_1d_out_len(p, t_in) <= 0)
        return 0;
    return (size_t)p->c_out * (size_t)p->k * (size_t)convt_chunk_cols(p, t_in);
}

struct convt_job {
    const struct conv_transpose_params *p;
    float *out, *col;
    const float *x, *w, *bias;
    int64_t t_in, t_out, rows, i0, nc, row_block;
};

/* col[r][i] = sum_ci w[ci][r] * x[ci][i0 + i] for the rows of blocks [begin, end). */
static void convt_gemm(void *arg, int64_t begin, int64_t end)
{
    const struct convt_job *j = arg;
    for (int64_t blk = begin; blk < end; blk++) {
        int64_t r0 = blk * j->row_block, nr = min64(j->row_block, j->rows - r0);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nr, (int)j->nc, j->p->c_in, 1.0f,
                    j->w + r0, (int)j->rows, j->x + j->i0, (int)j->t_in, 0.0f, j->col + r0 * j->nc,
                    (int)j->nc);
    }
}

/* Adds the chunk's col rows into output channels [begin, end) (bias first on chunk 0). */
static void convt_col2im(void *arg, int64_t begin, int64_t end)
{
    const struct convt_job *j = arg;
    const struct conv_transpose_params *p = j->p;
    int64_t s = p->stride;
    for (int64_t co = begin; co < end; co++) {
        float *o = j->out + co * j->t_out;
        if (j->i0 == 0) {
            float v = j->bias ? j->bias[co] : 0.0f;
            for (int64_t t = 0; t < j->t_out; t++)
                o[t] = v;
        }
        for (int k = 0; k < p->k; k++) {
            const float *c = j->col + (co * p->k + k) * j->nc;
            int64_t a = j->i0 * s + (int64_t)k * p->dilation - p->pad; /* output of col[0] */
            int64_t lo, hi;
            valid_range(a, s, j->t_out, j->nc, &lo, &hi);
            for (int64_t i = lo; i < hi; i++)
                o[a + i * s] += c[i];
        }
    }
}

int conv_transpose_1d(struct pool *pool, float *out, const float *x, const float *w,
                      const float *bias, const struct conv_transpose_params *p, int64_t t_in,
                      float *scratch, struct err *e)
{
    if (p->c_in < 1 || p->c_out < 1 || p->k < 1 || p->stride < 1 || p->dilation < 1 || p->pad < 0 ||
        p->out_pad < 0 || (p->out_pad >= p->stride && p->out_pad >= p->dilation))
        return err_set(e,
                       "conv_transpose_1d: invalid parameters (c_in %d, c_out %d, k %d, "
                       "stride %d, dilation %d, pad %d, output_padding %d)",
                       p->c_in, p->c_out, p->k, p->stride, p->dilation, p->pad, p->out_pad);
    if (conv_transpose_1d_out_len(p, t_in) <= 0)
        return err_set(e, "conv_transpose_1d: %lld input frames give an empty output",
                       (long long)t_in);
    struct convt_job j = { .p = p,
                           .out = out,
                           .col = scratch,
                           .x = x,
                           .w = w,
                           .bias = bias,
                           .t_in = t_in,
                           .t_out = conv_transpose_1d_out_len(p, t_in),
                           .rows = (int64_t)p->c_out * p->k };
    assert(j.t_out < INT32_MAX && j.rows < INT32_MAX && t_in < INT32_MAX && scratch);
    int64_t chunk = convt_chunk_cols(p, t_in);
    j.row_block = max64(64, round_up((j.rows + CONV_T_BLOCKS - 1) / CONV_T_BLOCKS, 16));
    int64_t n_blocks = (j.rows + j.row_block - 1) / j.row_block;
    blas_threads(1);
    for (j.i0 = 0; j.i0 < t_in; j.i0 += chunk) {
        j.nc = min64(chunk, t_in - j.i0);
        pool_for(pool, n_blocks, 1, convt_gemm, &j);
        pool_for(pool, p->c_out, 8, convt_col2im, &j);
    }
    return 0;
}

int conv_pad_reflect(float *out, const float *x, int64_t c, int64_t t, int pad_left, int pad_right,
                     struct err *e)
{
    if (pad_left < 0 || pad_right < 0 || pad_left >= t || pad_right >= t)
        return err_set(e, "conv_pad_reflect: pads %d/%d need more than %lld frames", pad_left,
                       pad_right, (long long)t);
    int64_t t_out = t + pad_left + pad_right;
    for (int64_t ch = 0; ch < c; ch++) {
        const float *xr = x + ch * t;
        float *o = out + ch * t_out;
        for (int i = 0; i < pad_left; i++)
            o[i] = xr[pad_left - i];
        memcpy(o + pad_left, xr, (size_t)t * sizeof *o);
        for (int i = 0; i < pad_right; i++)
            o[pad_left + t + i] = xr[t - 2 - i];
    }
    return 0;
}
