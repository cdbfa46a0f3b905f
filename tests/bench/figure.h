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

/* Monotonic seconds. */
double figure_now(void);

#endif
