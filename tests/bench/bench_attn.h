/*
 * bench_attn — timings of the attention kernel (and the activations it shares vector math
 * with) at GLM-4-Voice shapes, printed one figure per line.
 */
#ifndef PARLEY_BENCH_ATTN_H
#define PARLEY_BENCH_ATTN_H

/* quick: fewer repetitions and no tokenizer-sized case. */
void bench_attn_run(int quick);

#endif
