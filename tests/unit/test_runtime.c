/* Tests of the runtime's small pieces: thread pool, CPU levels, tensor shapes, errors. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu.h"
#include "runtime/err.h"
#include "runtime/pool.h"
#include "runtime/tensor.h"
#include "test.h"

struct cover {
    _Atomic int *hits;
    int64_t n;
};

static void mark(void *arg, int64_t begin, int64_t end)
{
    struct cover *c = arg;
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&c->hits[i], 1);
}

TEST(pool_covers_every_index_once)
{
    static const int64_t sizes[] = { 1, 2, 3, 7, 64, 1000, 1001 };
    static const int64_t grains[] = { 1, 4, 16, 1000 };
    for (int threads = 1; threads <= 4; threads++) {
        struct pool *p = pool_create(threads);
        REQUIRE(p != NULL);
        CHECK(pool_threads(p) == threads);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) {
                _Atomic int *hits = calloc((size_t)sizes[s], sizeof *hits);
                struct cover c = { hits, sizes[s] };
                pool_for(p, sizes[s], grains[g], mark, &c);
                for (int64_t i = 0; i < sizes[s]; i++)
                    if (!CHECK(atomic_load(&hits[i]) == 1))
                        break;
                free(hits);
            }
        }
        pool_free(p);
    }
}

struct ranges {
    int64_t begin[8], end[8];
    _Atomic int count;
};

static void record(void *arg, int64_t begin, int64_t end)
{
    struct ranges *r = arg;
    int i = atomic_fetch_add(&r->count, 1);
    r->begin[i] = begin;
    r->end[i] = end;
}

TEST(pool_splits_on_grain_boundaries)
{
    struct pool *p = pool_create(3);
    REQUIRE(p != NULL);
    struct ranges r = { 0 };
    pool_for(p, 100, 8, record, &r);
    int n = atomic_load(&r.count);
    CHECK(n == 3);
    for (int i = 0; i < n; i++) {
        CHECK(r.begin[i] % 8 == 0);
        CHECK(r.end[i] % 8 == 0 || r.end[i] == 100);
    }
    pool_free(p);
}

TEST(pool_many_short_loops)
{
    /* Decode runs hundreds of tiny loops per token; the hand-off must not lose one. */
    struct pool *p = pool_create(2);
    REQUIRE(p != NULL);
    _Atomic int hits[16] = { 0 };
    struct cover c = { hits, 16 };
    for (int i = 0; i < 20000; i++)
        pool_for(p, 16, 1, mark, &c);
    for (int i = 0; i < 16; i++)
        CHECK(atomic_load(&hits[i]) == 20000);
    pool_free(p);
}

TEST(pool_null_runs_inline)
{
    _Atomic int hits[5] = { 0 };
    struct cover c = { hits, 5 };
    pool_for(NULL, 5, 2, mark, &c);
    for (int i = 0; i < 5; i++)
        CHECK(atomic_load(&hits[i]) == 1);
    CHECK(pool_threads(NULL) == 1);
    CHECK(pool_create(0) == NULL);
}

TEST(cpu_levels)
{
    enum cpu_level best = cpu_detect();
    CHECK(cpu_level() <= best);
    for (int l = CPU_LEVEL_GENERIC; l <= (int)best; l++) {
        CHECK(cpu_set_level((enum cpu_level)l) == 0);
        CHECK(cpu_level() == (enum cpu_level)l);
    }
    if (best < CPU_LEVEL_AVX512)
        CHECK(cpu_set_level(CPU_LEVEL_AVX512) == -1);
    cpu_set_level(best);
    CHECK(strcmp(cpu_level_name(CPU_LEVEL_AVX2), "avx2") == 0);
}

TEST(tensor_shapes)
{
    struct tensor t;
    int64_t ne[2] = { 4096, 4608 };
    REQUIRE(tensor_init(&t, "w", DTYPE_BF16, 2, ne, NULL) == 0);
    CHECK(t.nb[0] == 2 && t.nb[1] == 8192 && t.nb[2] == 8192ull * 4608);
    CHECK(tensor_nelements(&t) == 4096ll * 4608);
    CHECK(tensor_nbytes(&t) == 4096ull * 4608 * 2);
    CHECK(tensor_nrows(&t) == 4608);
    char buf[64];
    CHECK(strcmp(tensor_shape_str(&t, buf, sizeof buf), "[4608, 4096]") == 0);

    int64_t q[2] = { 64, 3 };
    REQUIRE(tensor_init(&t, "q", DTYPE_Q8_0, 2, q, NULL) == 0);
    CHECK(t.nb[1] == 68 && tensor_nbytes(&t) == 204);
    int64_t partial[1] = { 40 };
    CHECK(tensor_init(&t, "q", DTYPE_Q8_0, 1, partial, NULL) == -1);
    int64_t zero[2] = { 4, 0 };
    CHECK(tensor_init(&t, "z", DTYPE_F32, 2, zero, NULL) == -1);
    int64_t huge[4] = { 1ll << 40, 1ll << 40, 1, 1 };
    CHECK(tensor_init(&t, "h", DTYPE_F32, 4, huge, NULL) == -1);
    CHECK(tensor_init(&t, "d", DTYPE_F32, 5, huge, NULL) == -1);
    CHECK(tensor_init(&t, "u", (enum dtype)7, 1, ne, NULL) == -1);
}

TEST(err_messages)
{
    struct err e;
    CHECK(err_set(&e, "bad %s", "thing") == -1);
    CHECK(strcmp(e.msg, "bad thing") == 0);
    CHECK(err_prefix(&e, "file %d", 3) == -1);
    CHECK(strcmp(e.msg, "file 3: bad thing") == 0);
    CHECK(err_set(NULL, "ignored") == -1);
    char longer[2 * ERR_MAX];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    err_set(&e, "%s", longer);
    CHECK(strlen(e.msg) == ERR_MAX - 1);
    err_prefix(&e, "%s", longer);
    CHECK(strlen(e.msg) < ERR_MAX);
}
