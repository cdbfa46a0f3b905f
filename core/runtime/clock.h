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

/* Sleeps ms milliseconds (nothing when ms <= 0); a signal may end it early. */
static inline void clock_sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    time_t s = (time_t)(ms / 1000);
    struct timespec ts = { s, (long)((ms - 1000.0 * (double)s) * 1e6) };
    nanosleep(&ts, NULL);
}

#endif
