/*
 * cpu — which SIMD kernels this processor can run.
 *
 * Everything is compiled for baseline x86-64; kernels for wider ISAs live in files ending in
 * _avx2.c / _avx512.c compiled with those flags, and are only called when cpu_level() says
 * the processor (and the OS, through XSAVE state) supports them.
 */
#ifndef PARLEY_CPU_H
#define PARLEY_CPU_H

enum cpu_level {
    CPU_LEVEL_GENERIC = 0, /* portable C */
    CPU_LEVEL_AVX2 = 1,    /* AVX2 + FMA + F16C */
    CPU_LEVEL_AVX512 = 2,  /* AVX-512 F/BW/DQ/VL + BF16 + VNNI, plus AVX2 */
};

/* The level in use: the best the processor supports, lowered by the environment variable
 * PARLEY_CPU=generic|avx2|avx512 or by cpu_set_level(). */
enum cpu_level cpu_level(void);

/* The best level the processor supports, ignoring overrides. */
enum cpu_level cpu_detect(void);

/* Selects a level for the whole process (tests use this to run every kernel family).
 * Returns -1, changing nothing, when the processor lacks it. Not thread-safe: call it while
 * no kernels run. */
int cpu_set_level(enum cpu_level level);

const char *cpu_level_name(enum cpu_level level);

#endif
