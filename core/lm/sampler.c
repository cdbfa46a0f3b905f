/* sampler — see sampler.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lm/sampler.h"

void sampler_defaults(struct sampler_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 0.2f;
    p->top_k = 50;
    p->top_p = 0.8f;
    p->repetition_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->max_new = 2000;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

double sampler_uniform(struct sampler *s)
{
    if (s->uniform)
        return s->uniform(s->uniform_ctx);
    uint64_t *r = s->rng;
    uint64_t out = rotl(r[1] * 5, 7) * 9, t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return (double)(out >> 11) * (1.0 / 9007199254740992.0);
}

void sampler_reset(struct sampler *s, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    if (s->seen)
        memset(s->seen, 0, (size_t)s->n_vocab);
}

int sampler_check(const struct sampler_params *p, struct err *e)
{
    if (!(p->temperature == p->temperature) || p->top_k < 0 || !(p->top_p > 0) ||
        !(p->repetition_penalty > 0) || p->mask_from < 0)
        return err_set(e,
                       "sampler: bad settings (temperature %g, top_k %d, top_p %g, "
                       "repetition penalty %g)",
                       (double)p->temperature, p->top_k, (double)p->top_p,
                       (double)p->repetition_penalty);
    return 0;
}

int sampler_init(struct sampler *s, const struct sampler_params *p, int64_t n_vocab, struct err *e)
{
    memset(s, 0, sizeof *s);
    if (n_vocab < 1)
        return err_set(e, "sampler: empty vocabulary");
    if (sampler_check(p, e) != 0)
        return -1;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->val = malloc((size_t)n_vocab * sizeof *s->val);
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->seen = calloc((size_t)n_vocab, 1);
    if (!s->val || !s->idx || !s->work || !s->seen) {
        sampler_free(s);
        return err_set(e, "sampler: out of memory");
    }
    sampler_reset(s, p->seed);
    return 0;
}

void sampler_free(struct sampler *s)
{
    if (!s)
        return;
    free(s->val);
    free(s->idx);
    free(s->work);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

void sampler_accept(struct sampler *s, int32_t id)
{
    if (id >= 0 && id < s->n_vocab)
        s->seen[id] = 1;
}

/* Descending by value, then ascending id: a total order, so results do not depend on the
 * sort's stability. */
static int cmp_desc(const void *a, const void *b, void *ctx)
{
    const float *v = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (v[i] != v[j])
        return v[i] > v[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* Restores the min-heap h[0..n) below position i. */
static void sift_down(float *h, int64_t n, int64_t i)
{
    for (;;) {
        int64_t l = 2 * i + 1, m = i;
        if (l < n && h[l] < h[m])
            m = l;
        if (l + 1 < n && h[l + 1] < h[m])
            m = l + 1;
        if (m == i)
            return;
        float t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* The k-th largest of the finite values among v[0..n) (1 <= k <= their count), in one pass
 * keeping the k largest in a min-heap (heap: k floats): most values lose against its root. */
static float kth_largest(const float *v, int64_t n, int64_t k, float *heap)
{
    int64_t size = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!(v[i] > -INFINITY))
            continue;
        if (size < k) {
            heap[size++] = v[i];
            if (size == k)
                for (int64_t j = k / 2 - 1; j >= 0; j--)
                    sift_down(heap, k, j);
        } else if (v[i] > heap[0]) {
            heap[0] = v[i];
            sift_down(heap, k, 0);
        }
    }
    return heap[0];
}

/* v[0..limit) = the logits after the penalties; returns the first largest (NaNs, which a
 * broken model may give, are never the largest; 0 when all are NaN). */
static int32_t penalized(struct sampler *s, const float *logits, int64_t limit)
{
    float *v = s->val;
    int32_t best = -1;
    for (int64_t i = 0; i < limit; i++) {
        float x = logits[i];
        if (s->seen[i]) {
            if (s->p.repetition_penalty != 1.0f)
                x = x < 0 ? x * s->p.repetition_penalty : x / s->p.repetition_penalty;
            x -= s->p.presence_penalty;
        }
        v[i] = x;
        if (x == x && (best < 0 || x > v[best]))
            best = (int32_t)i;
    }
    return best < 0 ? 0 : best;
}

/*
 * The candidates, sorted (descending value, then ascending id) into s->idx; returns their
 * count and sets *dropped to the summed exp(v - mx) of tokens left out whose probability
 * top-p must still count. Top-k keeps every value >= the k-th largest. With top-k off and
 * top-p on, tokens below mx - ln(n / (1 - top_p)) - 1 are left out before sorting: each has
 * probability below e^-1 (1 - top_p) / n, all of them together below 1 - top_p, so they are
 * the lowest and top-p drops them whatever the rest (keeping them would only make the sort
 * longer: 168k candidates sorted cost 20 ms a token).
 */
static int64_t candidates(struct sampler *s, int64_t limit, float mx, double *dropped)
{
    const float *v = s->val;
    int64_t n = 0;
    for (int64_t i = 0; i < limit; i++)
        n += v[i] > -INFINITY;
    float floor = -INFINITY;
    int by_top_p = 0;
    *dropped = 0;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        floor = kth_largest(v, limit, s->p.top_k, s->work);
    } else if (s->p.top_p < 1.0f) {
        floor = (float)((double)mx - log((double)n / (1.0 - (double)s->p.top_p)) - 1.0);
        by_top_p = 1;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < limit; i++) {
        if (v[i] >= floor && v[i] > -INFINITY)
            s->idx[m++] = (int32_t)i;
        else if (by_top_p && v[i] > -INFINITY)
            *dropped += exp((double)(v[i] - mx));
    }
    qsort_r(s->idx, (size_t)m, sizeof *s->idx, cmp_desc, s->val);
    return m;
}

int32_t sampler_sample(struct sampler *s, const float *logits)
{
    const int64_t V = s->n_vocab,
                  limit = s->p.mask_from > 0 && s->p.mask_from < V ? s->p.mask_from : V;
    float *v = s->val;
    int32_t best = penalized(s, logits, limit);
    if (s->p.greedy || s->p.temperature <= 0)
        return best;
    const float inv_t = 1.0f / s->p.temperature;
    for (int64_t i = 0; i < limit; i++)
        v[i] *= inv_t;
    const float mx = v[best];                /* scaling by inv_t > 0 keeps the order */
    if (!(mx > -INFINITY) || mx == INFINITY) /* nothing to draw from, or one certain */
        return best;
    double dropped;
    int64_t n = candidates(s, limit, mx, &dropped);
    /* softmax over the candidates (and the mass top-p drops first) */
    double sum = dropped;
    for (int64_t i = 0; i < n; i++)
        sum += exp((double)(v[s->idx[i]] - mx));
    /* top-p: from the smallest upwards, drop while the cumulative probability <= 1 − p */
    int64_t keep = n;
    if (s->p.top_p < 1.0f) {
        float cum = (float)(dropped / sum);
        for (int64_t i = n - 1; i > 0; i--) {
            cum += (float)(exp((double)(v[s->idx[i]] - mx)) / sum);
            if (cum <= 1.0f - s->p.top_p)
                keep = i;
            else
                break;
        }
    }
    double total = 0;
    for (int64_t i = 0; i < keep; i++)
        total += exp((double)(v[s->idx[i]] - mx));
    double u = sampler_uniform(s) * total, acc = 0;
    for (int64_t i = 0; i < keep; i++) {
        acc += exp((double)(v[s->idx[i]] - mx));
        if (u < acc)
            return s->idx[i];
    }
    return s->idx[keep - 1];
}
