/*
 * bench_conv — figures for the conv, vq and spectral kernels at the models' shapes, each next
 * to the plain OpenBLAS sgemm of the same matrix product measured in the same run.
 */
#ifndef PARLEY_BENCH_CONV_H
#define PARLEY_BENCH_CONV_H

/* Prints the figures (medians of repeated runs; fewer repetitions when quick). */
void bench_conv_run(int quick);

#endif
