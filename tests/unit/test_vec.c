/* Tests of vec: each op is the plain f32 operation, bit for bit, on odd sizes and in place. */
#include <stdlib.h>
#include <string.h>

#include "kernels/vec.h"
#include "test.h"

static const int64_t sizes[] = { 0, 1, 3, 17, 1000, 4099 };

TEST(vec_ops_exact)
{
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        float *a = malloc((n + 1) * 4), *b = malloc((n + 1) * 4), *y = malloc((n + 1) * 4);
        float *z = malloc((n + 1) * 4);
        REQUIRE(a && b && y && z);
        test_fill_uniform(a, n + 1, -10.0f, 10.0f);
        test_fill_uniform(b, n + 1, -10.0f, 10.0f);
        const float s3 = 0.3f;
        for (int op = 0; op < 6; op++) {
            y[n] = z[n] = 777.0f; /* never written */
            for (int64_t i = 0; i < n; i++) {
                volatile float t = b[i] * s3; /* one rounding, then the add */
                z[i] = op == 0   ? a[i] + b[i]
                       : op == 1 ? a[i] - b[i]
                       : op == 2 ? a[i] * b[i]
                       : op == 3 ? a[i] * s3
                       : op == 4 ? a[i] + t
                                 : a[i];
            }
            for (int inplace = 0; inplace < 2; inplace++) {
                float *out = y;
                const float *in = a;
                if (inplace) {
                    memcpy(y, a, n * 4);
                    in = y;
                }
                switch (op) {
                case 0: vec_add(out, in, b, n); break;
                case 1: vec_sub(out, in, b, n); break;
                case 2: vec_mul(out, in, b, n); break;
                case 3: vec_scale(out, in, s3, n); break;
                case 4: vec_add_scaled(out, in, b, s3, n); break;
                case 5: vec_copy(out, in, n); break;
                }
                CHECK(memcmp(y, z, (n + 1) * 4) == 0);
            }
        }
        free(a), free(b), free(y), free(z);
    }
}

TEST(vec_bias_broadcast)
{
    enum { R = 5, D = 13 };
    float x[R * D], y[R * D], bias[D], bc[R];
    test_fill_uniform(x, R * D, -3.0f, 3.0f);
    test_fill_uniform(bias, D, -1.0f, 1.0f);
    test_fill_uniform(bc, R, -1.0f, 1.0f);
    vec_add_bias(y, x, bias, R, D);
    for (int r = 0; r < R; r++)
        for (int d = 0; d < D; d++)
            CHECK(y[r * D + d] == x[r * D + d] + bias[d]);
    vec_add_bias_ch(y, x, bc, R, D); /* [C = R][T = D] */
    for (int r = 0; r < R; r++)
        for (int d = 0; d < D; d++)
            CHECK(y[r * D + d] == x[r * D + d] + bc[r]);
    memcpy(y, x, sizeof x);
    vec_add_bias(y, y, bias, R, D);
    for (int r = 0; r < R; r++)
        for (int d = 0; d < D; d++)
            CHECK(y[r * D + d] == x[r * D + d] + bias[d]);
}
