/* The sampler: greedy, padding mask, top-k ties, top-p's boundary, temperature, penalties,
 * the injected uniform hook and seeded reproducibility. */
#include <math.h>
#include <stdio.h>
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

    p.top_k = -1;
    CHECK(sampler_init(&a, &p, 8, &e) == -1);
}
