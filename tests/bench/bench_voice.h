/*
 * bench_voice — the speech decoder's figures at the real GLM-4-Voice-Decoder
 * dimensions with random weights made here (flow 111 M and HiFT 20 M parameters, f32):
 * real-time factors (compute seconds per second of audio) of the flow decoder on the first
 * 10-token block and on steady 20-token blocks behind a capped prompt, of HiFT on the frames
 * those calls vocode, the first block's flow + HiFT latency, and GFLOP/s as a percentage of
 * the OpenBLAS sgemm rate measured in the same run; 1 and 2 threads.
 */
#ifndef PARLEY_BENCH_VOICE_H
#define PARLEY_BENCH_VOICE_H

#include <stdio.h>

void bench_voice_run(int quick);

#endif
