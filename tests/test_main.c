/*
 * Runs the registered unit tests: all of them, or those whose name contains one of the
 * command-line arguments. Prints one line per test and closes with "N passed, N failed".
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "test.h"
#include "runtime/clock.h"

#define TEST_MAX 2048

struct test_case {
    const char *name, *file;
    test_fn *fn;
};

static struct test_case cases[TEST_MAX];
static int n_cases;
static const char *current;
static int current_failures;
static uint64_t rng_state;
static char tmpdir[512];

void test_register(const char *name, const char *file, test_fn *fn)
{
    if (n_cases == TEST_MAX) {
        fprintf(stderr, "test: more than %d tests; raise TEST_MAX\n", TEST_MAX);
        abort();
    }
    cases[n_cases++] = (struct test_case){ name, file, fn };
}

int test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    if (current_failures++ < 20) {
        fprintf(stdout, "    %s:%d: ", file, line);
        va_start(ap, fmt);
        vfprintf(stdout, fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
    }
    return 0;
}

const char *test_tmpdir(void)
{
    const char *base = getenv("PARLEY_TEST_TMP");
    if (!base)
        base = "build/test-tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/%s", base, current ? current : "none");
    char path[512];
    for (char *p = tmpdir;; p++) {
        if (*p == '/' || *p == 0) {
            size_t len = (size_t)(p - tmpdir);
            memcpy(path, tmpdir, len);
            path[len] = 0;
            if (len)
                mkdir(path, 0755);
            if (*p == 0)
                break;
        }
    }
    return tmpdir;
}

uint64_t test_rand_u64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

float test_rand_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((test_rand_u64() >> 40) * 0x1p-24);
}

float test_rand_normal(void)
{
    double u1 = ((test_rand_u64() >> 11) + 1) * 0x1p-53, u2 = (test_rand_u64() >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void test_fill_uniform(float *x, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = test_rand_uniform(lo, hi);
}

uint32_t test_ogg_crc(const uint8_t *p, size_t n)
{
    uint32_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint32_t)p[i] << 24;
        for (int k = 0; k < 8; k++)
            crc = crc & 0x80000000u ? crc << 1 ^ 0x04c11db7u : crc << 1;
    }
    return crc;
}

double test_max_abs_diff(const float *a, const float *b, int64_t n, int64_t *worst)
{
    double max = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > max || d != d) {
            max = d != d ? INFINITY : d;
            at = i;
        }
    }
    if (worst)
        *worst = at;
    return max;
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return 1;
    return 0;
}

static uint64_t seed_of(const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a, so each test's data is its own */
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211ull;
    return h | 1;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < n_cases; i++) {
        if (!selected(cases[i].name, argc, argv))
            continue;
        current = cases[i].name;
        current_failures = 0;
        rng_state = seed_of(current);
        double t0 = clock_ms();
        cases[i].fn();
        double ms = clock_ms() - t0;
        if (current_failures) {
            failed++;
            printf("FAIL %s (%s, %d failures)\n", current, cases[i].file, current_failures);
        } else {
            passed++;
            printf("ok   %s (%.0f ms)\n", current, ms);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
