#include "kernels/blas.h"

#include <cblas.h>
#include <stdatomic.h>

static _Atomic int current; /* 0 until first set: OpenBLAS's own default is unknown */

void blas_threads(int n)
{
    if (atomic_exchange(&current, n) != n)
        openblas_set_num_threads(n);
}
