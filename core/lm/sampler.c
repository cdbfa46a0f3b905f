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

int sampler_init(struct sampler *s, const struct sampler_params *p, int64_t n_vocab, struct err *e)
{
    memset(s, 0, sizeof *s);
    if (n_vocab < 1)
        return err_set(e, "sampler: empty vocabulary");
    if (!(p->temperature == p->temperature) || p->top_k < 0 || !(p->top_p > 0) ||
        !(p->repetition_penalty > 0) || p->mask_from < 0)
        return err_set(e,
                       "sampler: bad settings (temperature %g, top_k %d, top_p %g, "
                       "repetition penalty %g)",
                       (double)p->temperature, p->top_k, (double)p->top_p,
                       (double)p->repetition_penalty);
    s->p = *p;
    s->n_vocab = n_vocab;
    s->val = malloc((size_t)n_vocab * sizeof *s->val);
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    s->seen = calloc((size_t)n_vocab, 1);
    if (!s->val || !s->idx || !s->seen) {
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

/* The k-th largest of v[idx[0..n)] (1-based k <= n), by quickselect on a copy of idx. */
static float kth_largest(const float *v, int32_t *idx, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = v[idx[(lo + hi) / 2]];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[idx[i]] > pivot)
                i++;
            while (v[idx[j]] < pivot)
                j--;
            if (i <= j) {
                int32_t t = idx[i];
                idx[i++] = idx[j];
                idx[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return v[idx[want]];
}

int32_t sampler_sample(struct sampler *s, const float *logits)
{
    const int64_t V = s->n_vocab,
                  limit = s->p.mask_from > 0 && s->p.mask_from < V ? s->p.mask_from : V;
    float *v = s->val;
    for (int64_t i = 0; i < limit; i++) {
        float x = logits[i];
        if (s->seen[i]) {
            if (s->p.repetition_penalty != 1.0f)
                x = x < 0 ? x * s->p.repetition_penalty : x / s->p.repetition_penalty;
            x -= s->p.presence_penalty;
        }
        v[i] = x;
    }
    int32_t best = 0;
    for (int64_t i = 1; i < limit; i++)
        if (v[i] > v[best])
            best = (int32_t)i;
    if (s->p.greedy || s->p.temperature <= 0)
        return best;
    const float inv_t = 1.0f / s->p.temperature;
    int64_t n = 0;
    for (int64_t i = 0; i < limit; i++) {
        v[i] *= inv_t;
        if (v[i] > -INFINITY)
            s->idx[n++] = (int32_t)i;
    }
    if (n == 0)
        return best;
    /* top-k: keep every value >= the k-th largest (ties included) */
    if (s->p.top_k > 0 && s->p.top_k < n) {
        float kth = kth_largest(v, s->idx, n, s->p.top_k);
        int64_t m = 0;
        for (int64_t i = 0; i < limit; i++)
            if (v[i] >= kth)
                s->idx[m++] = (int32_t)i;
        n = m;
    }
    qsort_r(s->idx, (size_t)n, sizeof *s->idx, cmp_desc, v);
    /* softmax over the candidates */
    const float mx = v[s->idx[0]];
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += exp((double)(v[s->idx[i]] - mx));
    /* top-p: from the smallest upwards, drop while the cumulative probability <= 1 − p */
    int64_t keep = n;
    if (s->p.top_p < 1.0f) {
        float cum = 0;
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
