/*
 * figure — how every benchmark section reports a number: one human-readable line on stdout,
 * and the same figure as one JSON object per line in the file given by `--json`
 * ({"name", "value", "unit"} and, where a limit applies, "limit" and "ratio").
 */
#ifndef PARLEY_FIGURE_H
#define PARLEY_FIGURE_H

#include <stdio.h>

/* Where JSON lines go; NULL (the default) writes none. */
void figure_set_json(FILE *json);

/* limit <= 0: no limit applies. */
void figure_emit(const char *name, double value, const char *unit, double limit);

/* The median of v[0..n) (sorts v). */
double figure_median(double *v, int n);

/* OpenBLAS sgemm GFLOP/s at 2048³ with this many threads, the median of three runs: the limit
 * that sections measure next to their own figures. Leaves OpenBLAS on one thread, so that its
 * threads do not spin into the next measurement. */
double figure_sgemm_rate(int threads);

#endif
