/*
 * clock — the monotonic clock, for timings, deadlines and pacing (never wall time: it does not
 * jump when the system clock is set).
 */
#ifndef PARLEY_CLOCK_H
#define PARLEY_CLOCK_H

#include <time.h>

/* Seconds since an arbitrary fixed point. */
static inline double clock_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The same in milliseconds. */
static inline double clock_ms(void)
{
    return 1e3 * clock_seconds();
}

#endif
