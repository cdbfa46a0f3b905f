/*
 * Tests of the element types: f16 decoding exhaustively, f32 -> f16 / bf16 rounding against
 * references computed another way (double arithmetic over the exact decoded values, and the
 * processor's F16C instructions where present), Q8_0 error bounds, and Q8_0 agreement with
 * the converter (deploy/gguf.py).
 */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/ref_linear.h"
#include "runtime/cpu.h"
#include "runtime/dtype.h"
#include "test.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- references ------------------------------------------------------------------------ */

/*
 * Nearest representable value, ties to the even pattern, by bisection over the positive
 * finite patterns [0, max_pattern] (their values increase with the pattern) using the exact
 * decoder; values at or above the midpoint between the largest finite value and the next
 * power of two (`beyond`) overflow to infinity.
 */
static uint16_t ref_round(float f, double (*decode)(uint16_t), uint16_t max_pattern,
                          uint16_t inf_pattern, double beyond)
{
    uint16_t sign = (bits_of(f) >> 31) ? 0x8000 : 0;
    double v = fabs((double)f);
    if (isinf(v))
        return sign | inf_pattern;
    if (v >= (decode(max_pattern) + beyond) / 2)
        return sign | inf_pattern;
    uint32_t lo = 0, hi = max_pattern; /* largest h with decode(h) <= v */
    while (lo < hi) {
        uint32_t mid = (lo + hi + 1) / 2;
        if (decode((uint16_t)mid) <= v)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (lo == max_pattern)
        return sign | (uint16_t)lo;
    double a = v - decode((uint16_t)lo), b = decode((uint16_t)(lo + 1)) - v;
    uint32_t r = a < b ? lo : a > b ? lo + 1 : (lo & 1 ? lo + 1 : lo);
    return sign | (uint16_t)r;
}

static uint16_t ref_f16(float f)
{
    return ref_round(f, ref_linear_f16, 0x7bff, 0x7c00, 65536.0);
}

static uint16_t ref_bf16(float f)
{
    return ref_round(f, ref_linear_bf16, 0x7f7f, 0x7f80, ldexp(1.0, 128));
}

__attribute__((target("f16c"))) static uint16_t f16c_from_f32(float f)
{
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

__attribute__((target("f16c"))) static float f16c_to_f32(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* ---- the float sample: every rounding boundary of both 16-bit types, and more ----------- */

struct sample {
    float *v;
    size_t n, cap;
};

static void add(struct sample *s, float f)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            abort(); /* test code */
    }
    s->v[s->n++] = f;
}

/* f, its neighbours one float ulp away, and the negatives of all three. */
static void add_around(struct sample *s, float f)
{
    float g[3] = { f, nextafterf(f, INFINITY), nextafterf(f, 0.0f) };
    for (int i = 0; i < 3; i++) {
        add(s, g[i]);
        add(s, -g[i]);
    }
}

static struct sample make_sample(void)
{
    struct sample s = { 0 };
    /* each f16 value and the midpoint to the next one (exact in f32) */
    for (uint32_t h = 0; h <= 0x7bff; h++) {
        double a = ref_linear_f16((uint16_t)h);
        double b = h == 0x7bff ? 65536.0 : ref_linear_f16((uint16_t)(h + 1));
        add_around(&s, (float)a);
        add_around(&s, (float)((a + b) / 2));
    }
    /* each bf16 value and the midpoint to the next one */
    for (uint32_t h = 0; h <= 0x7f7f; h++) {
        double a = ref_linear_bf16((uint16_t)h);
        double b = h == 0x7f7f ? ldexp(1.0, 128) : ref_linear_bf16((uint16_t)(h + 1));
        add_around(&s, (float)a);
        add_around(&s, (float)((a + b) / 2));
    }
    /* a sweep across all bit patterns, and random ones */
    for (uint64_t u = 0; u < 0x100000000ull; u += 65537)
        add(&s, float_of((uint32_t)u));
    for (int i = 0; i < 200000; i++)
        add(&s, float_of((uint32_t)test_rand_u64()));
    static const float special[] = { 0.0f,          -0.0f,           INFINITY, -INFINITY,
                                     3.4028235e38f, 1.17549435e-38f, 1e-45f,   65504.0f,
                                     65519.996f,    65520.0f,        0x1p-24f, 0x1p-25f,
                                     0x1.8p-25f,    0x1.000002p-25f, 1.0f };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        add_around(&s, special[i]);
    return s;
}

/* ---- tests ----------------------------------------------------------------------------- */

TEST(dtype_f16_decode_exhaustive)
{
    int f16c = cpu_detect() >= CPU_LEVEL_AVX2;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = dtype_f16_to_f32((uint16_t)h);
        double want = ref_linear_f16((uint16_t)h);
        if (isnan(want)) {
            if (!CHECK(isnan(f)))
                break;
            /* a NaN converts back to a NaN of the same sign */
            uint16_t back = dtype_f32_to_f16(f);
            if (!CHECK((back & 0x7c00) == 0x7c00 && (back & 0x3ff) && (back >> 15) == (h >> 15)))
                break;
            continue;
        }
        if (!CHECK((double)f == want && !!signbit(f) == !!signbit(want))) {
            test_fail(__FILE__, __LINE__, "f16 %04x: %.9g, want %.9g", h, (double)f, want);
            break;
        }
        if (f16c && !CHECK(bits_of(f) == bits_of(f16c_to_f32((uint16_t)h))))
            break;
        /* every non-NaN pattern survives the round trip */
        if (!CHECK(dtype_f32_to_f16(f) == h)) {
            test_fail(__FILE__, __LINE__, "f16 %04x -> %.9g -> %04x", h, (double)f,
                      dtype_f32_to_f16(f));
            break;
        }
    }
}

TEST(dtype_f16_rounding)
{
    struct sample s = make_sample();
    int f16c = cpu_detect() >= CPU_LEVEL_AVX2, failures = 0;
    for (size_t i = 0; i < s.n && failures < 5; i++) {
        float f = s.v[i];
        uint16_t got = dtype_f32_to_f16(f);
        if (isnan(f)) {
            if (!CHECK((got & 0x7c00) == 0x7c00 && (got & 0x3ff) &&
                       (got >> 15) == (bits_of(f) >> 31)))
                failures++;
            continue;
        }
        uint16_t want = ref_f16(f);
        if (got != want) {
            test_fail(__FILE__, __LINE__, "f32 %08x (%.9g) -> f16 %04x, want %04x", bits_of(f),
                      (double)f, got, want);
            failures++;
        }
        if (f16c && got != f16c_from_f32(f)) {
            test_fail(__FILE__, __LINE__, "f32 %08x (%.9g) -> f16 %04x, F16C says %04x", bits_of(f),
                      (double)f, got, f16c_from_f32(f));
            failures++;
        }
    }
    CHECK(s.n > 500000);
    free(s.v);
}

TEST(dtype_bf16_rounding)
{
    struct sample s = make_sample();
    int failures = 0;
    for (size_t i = 0; i < s.n && failures < 5; i++) {
        float f = s.v[i];
        uint16_t got = dtype_f32_to_bf16(f);
        if (isnan(f)) {
            /* a quiet NaN of the same sign */
            if (!CHECK((got & 0x7fc0) == 0x7fc0 && (got >> 15) == (bits_of(f) >> 31)))
                failures++;
            continue;
        }
        uint16_t want = ref_bf16(f);
        if (got != want) {
            test_fail(__FILE__, __LINE__, "f32 %08x (%.9g) -> bf16 %04x, want %04x", bits_of(f),
                      (double)f, got, want);
            failures++;
        }
        /* decoding is exact: the upper half of the f32 */
        if ((double)dtype_bf16_to_f32(got) != ref_linear_bf16(got) && !isnan(f))
            failures += !CHECK(0);
    }
    free(s.v);
}

TEST(dtype_array_conversions_match_scalar)
{
    float f[37];
    uint16_t h[37], b[37];
    float back[37];
    for (int i = 0; i < 37; i++)
        f[i] = test_rand_normal() * 100.0f;
    dtype_from_f32(DTYPE_F16, f, h, 37);
    dtype_from_f32(DTYPE_BF16, f, b, 37);
    for (int i = 0; i < 37; i++) {
        CHECK(h[i] == dtype_f32_to_f16(f[i]));
        CHECK(b[i] == dtype_f32_to_bf16(f[i]));
    }
    dtype_to_f32(DTYPE_F16, h, back, 37);
    for (int i = 0; i < 37; i++)
        CHECK(back[i] == dtype_f16_to_f32(h[i]));
    dtype_to_f32(DTYPE_BF16, b, back, 37);
    for (int i = 0; i < 37; i++)
        CHECK(back[i] == dtype_bf16_to_f32(b[i]));
    CHECK(dtype_row_bytes(DTYPE_Q8_0, 64) == 68);
    CHECK(dtype_row_bytes(DTYPE_Q8_0, 33) == 0);
    CHECK(dtype_row_bytes(DTYPE_BF16, 3) == 6);
}

/* Blocks of 32 with scales from 1e-3 to 1e3, plus an all-zero block and a single spike. */
static void q8_data(float *x, int blocks)
{
    for (int b = 0; b < blocks; b++) {
        float scale = powf(10.0f, test_rand_uniform(-3.0f, 3.0f));
        for (int j = 0; j < 32; j++)
            x[b * 32 + j] = test_rand_normal() * scale;
    }
    for (int j = 0; j < 32; j++) {
        x[j] = 0.0f;
        x[32 + j] = j == 7 ? -5.0f : 0.0f;
    }
}

TEST(dtype_q8_0_error_bound)
{
    enum { BLOCKS = 2000 };
    float *x = malloc(BLOCKS * 32 * sizeof *x), *deq = malloc(BLOCKS * 32 * sizeof *deq);
    struct dtype_q8_0 *q = malloc(BLOCKS * sizeof *q);
    REQUIRE(x && deq && q);
    q8_data(x, BLOCKS);
    dtype_from_f32(DTYPE_Q8_0, x, q, BLOCKS * 32);
    dtype_to_f32(DTYPE_Q8_0, q, deq, BLOCKS * 32);
    for (int b = 0; b < BLOCKS; b++) {
        double amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmax(amax, fabs(x[b * 32 + j]));
        double d32 = amax / 127.0, d16 = ref_linear_f16(q[b].d);
        /* the stored scale is the f16 rounding of max|x| / 127 */
        CHECK(q[b].d == dtype_f32_to_f16((float)amax / 127.0f));
        for (int j = 0; j < 32; j++) {
            int v = q[b].q[j];
            CHECK(v >= -127 && v <= 127);
            /* half a step of the f32 scale, plus what rounding the scale to f16 moves q*d,
             * plus the float rounding of the product */
            double err = fabs((double)x[b * 32 + j] - (double)deq[b * 32 + j]);
            double bound = d32 / 2 * (1 + 1e-6) + abs(v) * fabs(d32 - d16) +
                           fabs((double)deq[b * 32 + j]) * 0x1p-24 + 1e-30;
            if (!(err <= bound)) {
                test_fail(__FILE__, __LINE__, "block %d [%d]: x %.9g, deq %.9g, d %.9g", b, j,
                          (double)x[b * 32 + j], (double)deq[b * 32 + j], d32);
                b = BLOCKS;
                break;
            }
        }
    }
    free(x);
    free(deq);
    free(q);
}

/* Quantizes x with deploy/gguf.py (run by /usr/bin/python3) and compares the bytes with
 * dtype_from_f32. Returns the number of differing blocks, or -1 when python failed. */
static int compare_with_gguf_py(const float *x, int blocks)
{
    char in[600], out[600], cmd[2000];
    const char *dir = test_tmpdir();
    snprintf(in, sizeof in, "%s/x.f32", dir);
    snprintf(out, sizeof out, "%s/q8.bin", dir);
    FILE *f = fopen(in, "wb");
    if (!f || fwrite(x, sizeof *x, (size_t)blocks * 32, f) != (size_t)blocks * 32) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import sys; sys.path.insert(0, 'deploy'); import gguf, "
             "numpy as np; x = np.fromfile('%s', dtype='<f4'); "
             "open('%s', 'wb').write(gguf.quantize_q8_0(x))\"",
             in, out);
    if (system(cmd) != 0)
        return -1;
    struct dtype_q8_0 *mine = malloc((size_t)blocks * sizeof *mine);
    struct dtype_q8_0 *theirs = malloc((size_t)blocks * sizeof *theirs);
    f = fopen(out, "rb");
    size_t got = f && mine && theirs ? fread(theirs, sizeof *theirs, (size_t)blocks, f) : 0;
    if (f)
        fclose(f);
    int diff = -1;
    if (got == (size_t)blocks) {
        dtype_from_f32(DTYPE_Q8_0, x, mine, (int64_t)blocks * 32);
        diff = 0;
        for (int b = 0; b < blocks; b++)
            if (memcmp(&mine[b], &theirs[b], sizeof mine[b]) != 0) {
                if (diff++ < 3)
                    test_fail(__FILE__, __LINE__, "block %d differs from gguf.py", b);
            }
    }
    free(mine);
    free(theirs);
    return diff;
}

TEST(dtype_q8_0_matches_gguf_py)
{
    enum { BLOCKS = 4000 };
    float *x = malloc(BLOCKS * 32 * sizeof *x);
    REQUIRE(x != NULL);
    q8_data(x, BLOCKS);
    /* exact halves of a step: both must round them away from zero (C's roundf) */
    for (int j = 0; j < 32; j++)
        x[2 * 32 + j] = j == 0 ? 127.0f : (float)(j - 16) + 0.5f;
    int diff = compare_with_gguf_py(x, BLOCKS);
    if (diff < 0)
        test_fail(__FILE__, __LINE__,
                  "could not run /usr/bin/python3 deploy/gguf.py "
                  "(run the tests from the repository root)");
    CHECK(diff == 0);
    free(x);
}

TEST(dtype_q8_0_gguf_py_just_below_half)
{
    /* x / d = 0.49999997 (the float below 0.5) must round to 0, as roundf does; adding 0.5
     * in float32 and flooring (gguf.py) gives 1 */
    float x[32] = { 127.0f, 0.49999997f, -0.49999997f, 1.49999988f };
    int diff = compare_with_gguf_py(x, 1);
    CHECK(diff == 0);
}
