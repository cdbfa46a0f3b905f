/*
 * bench_load — parleyd under load, as `make bench` figures: runs `parley load --figures` (the
 * load generator, daemon/cmd_load.c, next to this binary), which starts a parleyd with the
 * tiny golden model set and reports, for N = 1, 8 and 32 sessions speaking at real-time pace,
 * first-audio latency p50/p95, playback underruns and refusals, then the daemon's own work
 * per 20 ms frame (Opus decode, resampling, Opus encode, framing) in microseconds. The load
 * generator is a separate program because it links the protocol code (proto/), which this
 * benchmark binary does not.
 */
#ifndef PARLEY_BENCH_LOAD_H
#define PARLEY_BENCH_LOAD_H

void bench_load_run(int quick);

#endif
