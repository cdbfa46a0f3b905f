/*
 * DESIGN: one mutex and two condition variables. A loop is published by bumping `generation`
 * under the mutex; each worker wakes, runs its own range (index = worker number + 1) outside
 * the lock, and decrements `pending`; the caller runs range 0 and waits for pending == 0.
 * Workers spin briefly before sleeping, because decode issues hundreds of short loops per
 * token and a futex wake-up costs more than most of them.
 */
#include "runtime/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct pool {
    int n_threads;
    pthread_t *workers;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* workers wait here for a new generation */
    pthread_cond_t done; /* the caller waits here for pending == 0 */
    /* guarded by lock; generation and pending are also read without it while spinning */
    _Atomic uint64_t generation;
    _Atomic int pending;
    int stop;
    pool_fn *fn;
    void *arg;
    int64_t n, grain;
};

struct worker_arg {
    struct pool *pool;
    int index;
};

void pool_range(int64_t n, int64_t grain, int n_threads, int index, int64_t *begin, int64_t *end)
{
    int64_t blocks = (n + grain - 1) / grain;
    int64_t per = blocks / n_threads, extra = blocks % n_threads;
    int64_t b0 = index * per + (index < extra ? index : extra);
    int64_t b1 = b0 + per + (index < extra ? 1 : 0);
    *begin = b0 * grain < n ? b0 * grain : n;
    *end = b1 * grain < n ? b1 * grain : n;
}

static void run_range(struct pool *p, int index)
{
    int64_t begin, end;
    pool_range(p->n, p->grain, p->n_threads, index, &begin, &end);
    if (begin < end)
        p->fn(p->arg, begin, end);
}

static void *worker_main(void *argp)
{
    struct worker_arg *wa = argp;
    struct pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        for (int spin = 0; spin < 20000 && atomic_load(&p->generation) == seen; spin++)
            __builtin_ia32_pause();
        pthread_mutex_lock(&p->lock);
        while (atomic_load(&p->generation) == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        seen = atomic_load(&p->generation);
        pthread_mutex_unlock(&p->lock);

        run_range(p, index);

        pthread_mutex_lock(&p->lock);
        if (atomic_fetch_sub(&p->pending, 1) == 1)
            pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->lock);
    }
}

struct pool *pool_create(int n_threads)
{
    if (n_threads < 1)
        return NULL;
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_threads = n_threads;
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->index = i;
        }
        if (!wa || pthread_create(&p->workers[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n_threads = i; /* pool_free joins the ones that started */
            pool_free(p);
            return NULL;
        }
    }
    return p;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

int pool_threads(const struct pool *p)
{
    return p ? p->n_threads : 1;
}

void pool_for(struct pool *p, int64_t n, int64_t grain, pool_fn *fn, void *arg)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (!p || p->n_threads == 1 || n <= grain) {
        fn(arg, 0, n);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->grain = grain;
    atomic_store(&p->pending, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_range(p, 0);

    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->pending) > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
