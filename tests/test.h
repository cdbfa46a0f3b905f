/*
 * test — the unit-test harness: tests register themselves, tests/test_main.c runs them.
 *
 *   TEST(gguf_round_trip) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); REQUIRE(p != NULL); }
 *
 * CHECK records a failure and goes on; REQUIRE records it and leaves the test.
 */
#ifndef PARLEY_TEST_H
#define PARLEY_TEST_H

#include <stddef.h>
#include <stdint.h>

typedef void test_fn(void);

void test_register(const char *name, const char *file, test_fn *fn);
/* Records a failure of the running test; returns 0 so it can sit in an expression. */
int test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A directory for files a test writes (build/test-tmp/<test name>), created on demand. */
const char *test_tmpdir(void);
/* Deterministic pseudo-random numbers for test data (xorshift, seeded per test). */
uint64_t test_rand_u64(void);
float test_rand_uniform(float lo, float hi);
float test_rand_normal(void);
void test_fill_uniform(float *x, int64_t n, float lo, float hi);
/* Largest |a[i] - b[i]|; also the index where it occurs when worst is not NULL. */
double test_max_abs_diff(const float *a, const float *b, int64_t n, int64_t *worst);
/* The CRC of an Ogg page (polynomial 0x04c11db7, no reflection, initial 0) over p[0..n), for
 * tests that build or alter pages by hand. */
uint32_t test_ogg_crc(const uint8_t *p, size_t n);

#define TEST(name)                                                 \
    static void name(void);                                        \
    __attribute__((constructor)) static void name##_register(void) \
    {                                                              \
        test_register(#name, __FILE__, name);                      \
    }                                                              \
    static void name(void)

#define CHECK(cond) ((cond) ? 1 : test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond))

#define REQUIRE(cond)                                            \
    do {                                                         \
        if (!(cond)) {                                           \
            test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond); \
            return;                                              \
        }                                                        \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                     \
    do {                                                                                          \
        double check_a_ = (double)(a), check_b_ = (double)(b);                                    \
        if (!(check_a_ - check_b_ <= (tol) && check_b_ - check_a_ <= (tol)))                      \
            test_fail(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, tolerance %g", #a, check_a_, #b, \
                      check_b_, (double)(tol));                                                   \
    } while (0)

/* Compares two float arrays; reports the worst element and the tolerance on failure. */
#define CHECK_ARRAY_NEAR(a, b, n, tol)                                              \
    do {                                                                            \
        int64_t check_i_;                                                           \
        double check_d_ = test_max_abs_diff((a), (b), (n), &check_i_);              \
        if (!(check_d_ <= (tol)))                                                   \
            test_fail(__FILE__, __LINE__,                                           \
                      "%s vs %s: max |diff| %.3g at [%lld] (%.9g vs %.9g), "        \
                      "tolerance %g",                                               \
                      #a, #b, check_d_, (long long)check_i_, (double)(a)[check_i_], \
                      (double)(b)[check_i_], (double)(tol));                        \
    } while (0)

#endif
