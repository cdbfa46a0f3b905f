/*
 * pool — a fixed set of worker threads that run one parallel loop at a time.
 *
 * pool_for(p, n, grain, fn, arg) splits [0, n) into one contiguous range per thread, each a
 * multiple of `grain` long (the last one takes the rest), and returns when all ranges are
 * done; the calling thread runs the first range itself. The split depends only on n, grain
 * and the thread count, so results never depend on timing. A NULL pool runs everything on
 * the caller. One loop at a time per pool: callers from several threads need a pool each.
 */
#ifndef PARLEY_POOL_H
#define PARLEY_POOL_H

#include <stdint.h>

struct pool;

typedef void pool_fn(void *arg, int64_t begin, int64_t end);

/* n_threads >= 1 counts the caller; n_threads - 1 workers are started. NULL on failure. */
struct pool *pool_create(int n_threads);
void pool_free(struct pool *p);
int pool_threads(const struct pool *p); /* 1 for a NULL pool */

void pool_for(struct pool *p, int64_t n, int64_t grain, pool_fn *fn, void *arg);

/* Thread `index`'s range [*begin, *end) of [0, n) among n_threads, split as pool_for splits it
 * (contiguous, multiples of grain, the last one taking the rest; possibly empty): for loops
 * that run pool_for over one index per thread to give each thread its own scratch. */
void pool_range(int64_t n, int64_t grain, int n_threads, int index, int64_t *begin, int64_t *end);

#endif
