/*
 * spectral — see spectral.h. Shape letters: N = n_fft, B = N/2 + 1 bins, F frames, L samples.
 *
 * STFT: frames (reflect-padded windows of the signal, built per block of frames in a thread's
 * scratch slot) times the forward basis: out[2B][f0:f0+nb] = fwd[2B][N] x frames[nb][N]^T,
 * written straight into the [2B][F] output (ldc = F). Block sizes depend only on N.
 * iSTFT: all frames at once, frames[F][N] = spec[2B][F]^T x inv[2B][N] (one sgemm per fixed
 * block of frames), then each output sample gathers its overlapping frames in frame order
 * and divides by the squared-window envelope; every output element is computed by one thread
 * in a fixed order, so any thread count gives identical results.
 */
#include "kernels/blas.h"
#include "kernels/spectral.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SPECTRAL_BLOCK_FLOATS (1 << 16) /* frame floats per STFT block (256 KB) */
#define SPECTRAL_ISTFT_BLOCK  1024      /* frames per iSTFT sgemm */
#define SPECTRAL_ENVELOPE_MIN 1e-11f    /* torch.istft's "window overlap add min" */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

void spectral_hann(float *w, int n, int periodic)
{
    if (n == 1) { /* torch: a window of one sample is [1] */
        w[0] = 1.0f;
        return;
    }
    double m = periodic ? n : n - 1;
    for (int i = 0; i < n; i++)
        w[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / m));
}

void spectral_hann_torch(float *w, int n, int periodic)
{
    if (n == 1) {
        w[0] = 1.0f;
        return;
    }
    int m = periodic ? n + 1 : n; /* torch computes a symmetric window one longer, cut */
    float step = (float)(M_PI * 2.0 / (double)(m - 1));
    for (int i = 0; i < n; i++) {
        float angle = (float)i * step;
        float c = (float)cos((double)angle);
        float half = c * -0.5f;
        w[i] = half + 0.5f;
    }
}

/* cos and sin of 2 pi r / n for 0 <= r < n, exact at the quarter turns. */
static void unit_root(int64_t r, int64_t n, double *c, double *s)
{
    if (r == 0) {
        *c = 1.0, *s = 0.0;
    } else if (4 * r == n) {
        *c = 0.0, *s = 1.0;
    } else if (2 * r == n) {
        *c = -1.0, *s = 0.0;
    } else if (4 * r == 3 * n) {
        *c = 0.0, *s = -1.0;
    } else {
        double a = 2.0 * M_PI * (double)r / (double)n;
        *c = cos(a);
        *s = sin(a);
    }
}

int spectral_plan_init(struct spectral_plan *p, int n_fft, int hop, const float *window,
                       struct err *e)
{
    memset(p, 0, sizeof *p);
    if (n_fft < 2 || hop < 1 || n_fft > (1 << 16))
        return err_set(e, "spectral: invalid n_fft %d / hop %d", n_fft, hop);
    int n = n_fft, b = n / 2 + 1;
    p->n_fft = n;
    p->hop = hop;
    p->n_bins = b;
    p->window = malloc((size_t)n * sizeof *p->window);
    p->fwd = malloc((size_t)2 * b * n * sizeof *p->fwd);
    p->inv = malloc((size_t)2 * b * n * sizeof *p->inv);
    if (!p->window || !p->fwd || !p->inv) {
        spectral_plan_free(p);
        return err_set(e, "spectral: out of memory for n_fft %d", n_fft);
    }
    memcpy(p->window, window, (size_t)n * sizeof *p->window);
    for (int k = 0; k < b; k++) {
        /* the inverse counts each interior bin twice (its conjugate twin is not stored) and
         * drops the imaginary parts of DC and Nyquist, as a one-sided inverse real FFT does */
        int edge = k == 0 || 2 * k == n;
        double scale = (edge ? 1.0 : 2.0) / n;
        for (int i = 0; i < n; i++) {
            double c, s, w = window[i];
            unit_root((int64_t)k * i % n, n, &c, &s);
            p->fwd[(size_t)k * n + i] = (float)(w * c);
            p->fwd[(size_t)(b + k) * n + i] = (float)(-w * s);
            p->inv[(size_t)k * n + i] = (float)(scale * c * w);
            p->inv[(size_t)(b + k) * n + i] = edge ? 0.0f : (float)(-scale * s * w);
        }
    }
    return 0;
}

void spectral_plan_free(struct spectral_plan *p)
{
    free(p->window);
    free(p->fwd);
    free(p->inv);
    p->window = p->fwd = p->inv = NULL;
}

int64_t spectral_frames(const struct spectral_plan *p, int64_t l)
{
    int64_t padded = l + 2 * (int64_t)(p->n_fft / 2);
    return padded < p->n_fft ? 0 : 1 + (padded - p->n_fft) / p->hop;
}

static int64_t stft_block(const struct spectral_plan *p)
{
    return max64(16, SPECTRAL_BLOCK_FLOATS / p->n_fft);
}

size_t spectral_stft_scratch_floats(const struct spectral_plan *p, int64_t n_frames, int n_threads)
{
    return (size_t)(n_threads < 1 ? 1 : n_threads) * (size_t)min64(stft_block(p), n_frames) *
           (size_t)p->n_fft;
}

struct stft_job {
    const struct spectral_plan *p;
    float *out, *scratch;
    const float *x;
    int64_t l, n_frames, fb, n_blocks;
    int n_slots;
};

/* frames[f - f0][i] = xpad[f*hop + i], xpad = x reflect-padded by N/2 on both sides. */
static void stft_frames(const struct stft_job *j, float *frames, int64_t f0, int64_t nb)
{
    int64_t n = j->p->n_fft, l = j->l;
    for (int64_t f = 0; f < nb; f++) {
        float *row = frames + f * n;
        int64_t a = (f0 + f) * j->p->hop - n / 2; /* signal index of row[0] */
        if (a >= 0 && a + n <= l) {
            memcpy(row, j->x + a, (size_t)n * sizeof *row);
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t t = a + i;
            t = t < 0 ? -t : t >= l ? 2 * (l - 1) - t : t;
            row[i] = j->x[t];
        }
    }
}

static void stft_slots(void *arg, int64_t begin, int64_t end)
{
    const struct stft_job *j = arg;
    int n = j->p->n_fft, b2 = 2 * j->p->n_bins;
    for (int64_t s = begin; s < end; s++) {
        float *frames = j->scratch + s * min64(j->fb, j->n_frames) * n;
        for (int64_t blk = s * j->n_blocks / j->n_slots; blk < (s + 1) * j->n_blocks / j->n_slots;
             blk++) {
            int64_t f0 = blk * j->fb, nb = min64(j->fb, j->n_frames - f0);
            stft_frames(j, frames, f0, nb);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b2, (int)nb, n, 1.0f, j->p->fwd, n,
                        frames, n, 0.0f, j->out + f0, (int)j->n_frames);
        }
    }
}

int spectral_stft(struct pool *pool, const struct spectral_plan *p, float *out, int64_t n_frames,
                  const float *x, int64_t l, float *scratch, struct err *e)
{
    if (l <= p->n_fft / 2)
        return err_set(e, "stft: %lld samples are too few for reflection padding of %d",
                       (long long)l, p->n_fft / 2);
    if (n_frames < 0 || n_frames > spectral_frames(p, l))
        return err_set(e, "stft: %lld frames asked of %lld samples (at most %lld)",
                       (long long)n_frames, (long long)l, (long long)spectral_frames(p, l));
    if (n_frames == 0)
        return 0;
    assert(n_frames < INT32_MAX && scratch);
    struct stft_job j = { .p = p,
                          .out = out,
                          .scratch = scratch,
                          .x = x,
                          .l = l,
                          .n_frames = n_frames,
                          .fb = stft_block(p),
                          .n_slots = pool_threads(pool) };
    j.n_blocks = (n_frames + j.fb - 1) / j.fb;
    blas_threads(1);
    pool_for(pool, j.n_slots, 1, stft_slots, &j);
    return 0;
}

void spectral_power(float *out, const float *spec, int n_bins, int64_t n_frames)
{
    const float *im = spec + (int64_t)n_bins * n_frames;
    for (int64_t i = 0; i < (int64_t)n_bins * n_frames; i++) {
        float m = sqrtf(spec[i] * spec[i] + im[i] * im[i]);
        out[i] = m * m;
    }
}

int64_t spectral_istft_len(const struct spectral_plan *p, int64_t n_frames)
{
    return n_frames < 1 ? 0 : (int64_t)p->hop * (n_frames - 1);
}

size_t spectral_istft_scratch_floats(const struct spectral_plan *p, int64_t n_frames)
{
    return (size_t)(n_frames < 1 ? 0 : n_frames) * (size_t)p->n_fft;
}

struct istft_job {
    const struct spectral_plan *p;
    float *out, *frames;
    const float *spec;
    int64_t n_frames, length, full; /* full: N + hop*(F-1) samples before trimming */
};

static void istft_gemm(void *arg, int64_t begin, int64_t end)
{
    const struct istft_job *j = arg;
    int n = j->p->n_fft, b2 = 2 * j->p->n_bins;
    for (int64_t blk = begin; blk < end; blk++) {
        int64_t f0 = blk * SPECTRAL_ISTFT_BLOCK;
        int64_t nb = min64(SPECTRAL_ISTFT_BLOCK, j->n_frames - f0);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nb, n, b2, 1.0f, j->spec + f0,
                    (int)j->n_frames, j->p->inv, n, 0.0f, j->frames + f0 * n, n);
    }
}

/* The overlap-added frames at padded position t (0 while frames is NULL), summed in frame
 * order, and in *env the overlap-added squared window there. */
static float istft_sample(const struct istft_job *j, int64_t t, float *env)
{
    int64_t n = j->p->n_fft, hop = j->p->hop;
    int64_t f_lo = t - n + 1 > 0 ? (t - n + 1 + hop - 1) / hop : 0;
    int64_t f_hi = min64(t / hop, j->n_frames - 1);
    float y = 0.0f, w2 = 0.0f;
    for (int64_t f = f_lo; f <= f_hi; f++) {
        int64_t i = t - f * hop;
        if (j->frames)
            y += j->frames[f * n + i];
        w2 += j->p->window[i] * j->p->window[i];
    }
    *env = w2;
    return y;
}

static void istft_overlap_add(void *arg, int64_t begin, int64_t end)
{
    const struct istft_job *j = arg;
    int64_t start = j->p->n_fft / 2;
    for (int64_t i = begin; i < end; i++) {
        int64_t t = start + i;
        if (t >= j->full) {
            j->out[i] = 0.0f;
            continue;
        }
        float env, y = istft_sample(j, t, &env);
        j->out[i] = y / env;
    }
}

int spectral_istft(struct pool *pool, const struct spectral_plan *p, float *out, int64_t length,
                   const float *spec, int64_t n_frames, float *scratch, struct err *e)
{
    if (n_frames < 1)
        return err_set(e, "istft: no frames");
    if (length < 0)
        length = spectral_istft_len(p, n_frames);
    assert(n_frames < INT32_MAX && scratch);
    struct istft_job j = { .p = p,
                           .out = out,
                           .frames = NULL,
                           .spec = spec,
                           .n_frames = n_frames,
                           .length = length,
                           .full = p->n_fft + (int64_t)p->hop * (n_frames - 1) };
    /* refuse before writing anything, as torch checks the envelope before dividing; where
     * every frame position overlaps (t in [N-1, hop*(F-1)]) the envelope repeats with period
     * hop, so one period of that stretch is enough */
    int64_t start = p->n_fft / 2, stop = min64(start + length, j.full);
    int64_t skip_from = p->n_fft - 1 + p->hop, skip_to = (int64_t)p->hop * (n_frames - 1);
    for (int64_t t = start; t < stop; t++) {
        if (t >= skip_from && t <= skip_to) {
            t = skip_to;
            continue;
        }
        float env;
        istft_sample(&j, t, &env);
        if (!(fabsf(env) >= SPECTRAL_ENVELOPE_MIN))
            return err_set(e,
                           "istft: window overlap-add envelope %g < 1e-11 at sample %lld "
                           "(n_fft %d, hop %d)",
                           (double)env, (long long)(t - start), p->n_fft, p->hop);
    }
    j.frames = scratch;
    blas_threads(1);
    pool_for(pool, (n_frames + SPECTRAL_ISTFT_BLOCK - 1) / SPECTRAL_ISTFT_BLOCK, 1, istft_gemm, &j);
    pool_for(pool, length, 4096, istft_overlap_add, &j);
    return 0;
}
