/*
 * blas — OpenBLAS's process-wide thread count, changed only when a caller needs another.
 *
 * Kernels that split work over the pool run single-threaded sgemm inside each pool thread
 * (blas_threads(1)), which keeps results independent of timing; matmul_f32 lets OpenBLAS
 * thread itself (blas_threads(pool_threads(pool))). Like the pool, one caller at a time.
 */
#ifndef PARLEY_BLAS_H
#define PARLEY_BLAS_H

void blas_threads(int n);

#endif
