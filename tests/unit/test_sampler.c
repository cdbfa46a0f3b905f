/* The sampler: greedy, padding mask, top-k ties, top-p's boundary, temperature, penalties,
 * the injected uniform hook and seeded reproducibility; on a larger vocabulary, the same ids
 * as the rule applied to every candidate sorted (no candidate left out early). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm/sampler.h"
#include "test.h"

static double fixed_u;
static double fixed(void *ctx)
{
    return fixed_u;
}

TEST(sampler_rules)
{
    struct sampler s;
    struct sampler_params p;
    struct err e;
    float lg[8] = { 1, 3, 2, 3, 0, -1, 5, 4 };
    sampler_defaults(&p);
    CHECK(p.temperature == 0.2f && p.top_p == 0.8f && p.top_k == 50 && p.max_new == 2000);
    p.greedy = 1;
    REQUIRE(sampler_init(&s, &p, 8, &e) == 0);
    CHECK(sampler_sample(&s, lg) == 6);
    s.p.mask_from = 6;                  /* ids 6, 7 are padding */
    CHECK(sampler_sample(&s, lg) == 1); /* first of the tied largest */
    s.p.mask_from = 0;

    /* top-k 3 keeps 6, 7 and both 3s (tied with the third): u near 1 picks the last kept */
    s.p.greedy = 0;
    s.p.temperature = 1.0f;
    s.p.top_k = 3;
    s.p.top_p = 1.0f;
    s.uniform = fixed;
    fixed_u = 0.999999;
    CHECK(sampler_sample(&s, lg) == 3); /* order: 6, 7, 1, 3 (ties by id) */
    fixed_u = 0.0;
    CHECK(sampler_sample(&s, lg) == 6);

    /* top-p: p(6) ≈ 0.583, p(7) ≈ 0.214, p(1) = p(3) ≈ 0.079: ascending, the cumulative
     * sums reach 0.124 with id 3 and 0.203 with id 1: 0.8 keeps {6, 7, 1}, 0.7 {6, 7} */
    s.p.top_k = 0;
    s.p.top_p = 0.8f;
    fixed_u = 0.999999;
    CHECK(sampler_sample(&s, lg) == 1);
    s.p.top_p = 0.7f;
    fixed_u = 0.999999;
    CHECK(sampler_sample(&s, lg) == 7); /* kept {6, 7} */
    s.p.top_p = 0.5f;
    CHECK(sampler_sample(&s, lg) == 6); /* kept {6} */

    /* low temperature concentrates on the top; high spreads */
    s.uniform = NULL;
    s.p.top_p = 1.0f;
    s.p.temperature = 0.05f;
    int top = 0;
    for (int i = 0; i < 200; i++)
        top += sampler_sample(&s, lg) == 6;
    CHECK(top == 200);
    s.p.temperature = 1.0f;
    int counts[8] = { 0 };
    for (int i = 0; i < 20000; i++)
        counts[sampler_sample(&s, lg)]++;
    double z = 0;
    for (int i = 0; i < 8; i++)
        z += exp(lg[i]);
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(counts[i] / 20000.0, exp(lg[i]) / z, 0.015);

    /* penalties: repetition divides a positive logit; presence subtracts */
    s.p.greedy = 1;
    s.p.repetition_penalty = 2.0f;
    sampler_accept(&s, 6);
    CHECK(sampler_sample(&s, lg) == 7); /* 5/2 < 4 */
    s.p.repetition_penalty = 1.0f;
    s.p.presence_penalty = 0.5f;
    CHECK(sampler_sample(&s, lg) == 6); /* 4.5 > 4 */
    sampler_free(&s);

    /* the same seed gives the same draws */
    p.greedy = 0;
    p.seed = 42;
    struct sampler a, b;
    REQUIRE(sampler_init(&a, &p, 8, &e) == 0 && sampler_init(&b, &p, 8, &e) == 0);
    int same = 1;
    for (int i = 0; i < 100; i++)
        same &= sampler_sample(&a, lg) == sampler_sample(&b, lg);
    CHECK(same);
    sampler_free(&a);
    sampler_free(&b);

    /* a NaN (a broken model's) is never drawn nor taken as the largest */
    float bad[8] = { NAN, 1, 2, 9, NAN, 0, 1, 2 };
    REQUIRE(sampler_init(&a, &p, 8, &e) == 0);
    a.p.temperature = 0.1f;
    int nine = 1;
    for (int i = 0; i < 50; i++)
        nine &= sampler_sample(&a, bad) == 3;
    CHECK(nine);
    a.p.greedy = 1;
    CHECK(sampler_sample(&a, bad) == 3);
    a.p.greedy = 0;
    bad[6] = INFINITY; /* an infinite logit is certain */
    CHECK(sampler_sample(&a, bad) == 6);
    sampler_free(&a);

    p.top_k = -1;
    CHECK(sampler_init(&a, &p, 8, &e) == -1);
}

/* The rule of sampler.h written out over every finite candidate, sorted: top-k by the k-th
 * of the sorted values, top-p's cumulative from the smallest. */
struct ref_item {
    float v;
    int32_t id;
};

static int ref_cmp(const void *a, const void *b)
{
    const struct ref_item *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Every finite candidate of logits / temperature into it, sorted; returns their count. */
static int64_t ref_sort(const float *logits, int64_t V, float temperature, struct ref_item *it)
{
    int64_t n = 0;
    for (int64_t i = 0; i < V; i++) {
        float v = logits[i] * (1.0f / temperature);
        if (v > -INFINITY)
            it[n++] = (struct ref_item){ v, (int32_t)i };
    }
    qsort(it, (size_t)n, sizeof *it, ref_cmp);
    return n;
}

static int32_t ref_pick(const struct ref_item *it, int64_t n, const struct sampler_params *p,
                        double u)
{
    if (p->top_k > 0 && p->top_k < n) {
        float kth = it[p->top_k - 1].v;
        while (n > p->top_k && it[n - 1].v < kth)
            n--;
    }
    const float mx = it[0].v;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += exp((double)(it[i].v - mx));
    int64_t keep = n;
    float cum = 0;
    for (int64_t i = n - 1; i > 0 && p->top_p < 1.0f; i--) {
        cum += (float)(exp((double)(it[i].v - mx)) / sum);
        if (cum <= 1.0f - p->top_p)
            keep = i;
        else
            break;
    }
    double total = 0, acc = 0;
    for (int64_t i = 0; i < keep; i++)
        total += exp((double)(it[i].v - mx));
    for (int64_t i = 0; i < keep; i++) {
        acc += exp((double)(it[i].v - mx));
        if (u * total < acc)
            return it[i].id;
    }
    return it[keep - 1].id;
}

TEST(sampler_matches_the_rule_on_every_candidate)
{
    enum { V = 6000 };
    static float lg[V];
    static struct ref_item items[V];
    static const int top_ks[] = { 0, 1, 7, 50, V };
    static const float top_ps[] = { 0.3f, 0.8f, 0.99f, 1.0f };
    static const float temps[] = { 0.2f, 1.0f, 4.0f };
    int mismatches = 0, draws = 0;
    for (int trial = 0; trial < 5; trial++) {
        /* peaked and flat logits, ties, a few -inf (ids that can never be drawn) */
        for (int i = 0; i < V; i++)
            lg[i] = trial % 2 ? test_rand_uniform(-3.0f, 3.0f)
                              : (float)(test_rand_u64() % 40) * 0.25f - 6.0f;
        if (trial == 4) { /* at temperature 1, top-p 0.8: one token, five of probability
                           * ~0.05 and the rest just below where candidates are left out,
                           * together ~0.07: where top-p's cut falls depends on their mass */
            for (int i = 0; i < V; i++)
                lg[i] = -(logf((float)(V - V / 97 - 1) / 0.2f) + 1.0f) - 0.01f;
            lg[1] = 0.0f;
            for (int i = 2; i < 7; i++)
                lg[i] = logf(0.06f);
        }
        for (int i = 0; i < V; i += 97)
            lg[i] = -INFINITY;
        for (size_t c = 0; c < sizeof temps / sizeof *temps; c++) {
            int64_t n = ref_sort(lg, V, temps[c], items);
            for (size_t a = 0; a < sizeof top_ks / sizeof *top_ks; a++)
                for (size_t b = 0; b < sizeof top_ps / sizeof *top_ps; b++) {
                    struct sampler_params p;
                    struct sampler s;
                    struct err e;
                    sampler_defaults(&p);
                    p.top_k = top_ks[a];
                    p.top_p = top_ps[b];
                    p.temperature = temps[c];
                    REQUIRE(sampler_init(&s, &p, V, &e) == 0);
                    s.uniform = fixed;
                    /* u near 1 draws the last token kept: the kept set's boundary */
                    static const double us[] = {
                        0.0, 0.3, 0.7, 0.999, 0.999999, 1 - 1e-9, 1 - 1e-13
                    };
                    for (size_t d = 0; d < sizeof us / sizeof *us; d++) {
                        fixed_u = us[d];
                        draws++;
                        mismatches += sampler_sample(&s, lg) != ref_pick(items, n, &p, fixed_u);
                    }
                    sampler_free(&s);
                }
        }
    }
    printf("    %d draws, %d differ from the rule over every candidate\n", draws, mismatches);
    CHECK(mismatches == 0);
}
