/*
 * act_simd — the bodies of act's vector kernels, written once against vmath.h and compiled
 * twice, by act_avx2.c and act_avx512.c (tables act_avx2_kernels, act_avx512_kernels). Not
 * a public header.
 *
 * Every kernel walks full vectors, then one partial vector through masked loads and stores,
 * so the last elements go through the same code as the others.
 */
#include "kernels/act.h"
#include "kernels/vmath.h"

#define ACT_MAP(name, EXPR)                                          \
    static void name(float *out, const float *x, int64_t n, float p) \
    {                                                                \
        const vf pv = vf_set1(p);                                    \
        (void)pv;                                                    \
        int64_t i = 0;                                               \
        for (; i + VM_W <= n; i += VM_W) {                           \
            vf v = vf_load(x + i);                                   \
            vf_store(out + i, EXPR);                                 \
        }                                                            \
        if (i < n) {                                                 \
            vf v = vf_load_n(x + i, (int)(n - i));                   \
            vf_store_n(out + i, EXPR, (int)(n - i));                 \
        }                                                            \
    }

VM_INLINE vf silu1(vf v)
{
    return vf_div(v, vf_add(vf_set1(1.0f), vm_exp(vf_sub(vf_zero(), v))));
}

/* x·tanh(ln(1 + e^x)) = x·n/(n + 2) with n = e^x·(e^x + 2); from x = 20 on the ratio is 1 in
 * float, so x is clamped there before e^x overflows. */
VM_INLINE vf mish1(vf v)
{
    vf e = vm_exp(vf_min(v, vf_set1(20.0f)));
    vf n = vf_mul(e, vf_add(e, vf_set1(2.0f)));
    return vf_mul(v, vf_div(n, vf_add(n, vf_set1(2.0f))));
}

ACT_MAP(k_gelu, vm_gelu(v))
ACT_MAP(k_silu, silu1(v))
ACT_MAP(k_mish, mish1(v))
ACT_MAP(k_tanh, vm_tanh(v))
ACT_MAP(k_exp, vm_exp(v))
ACT_MAP(k_sin, vm_sin(v))
ACT_MAP(k_elu, vf_select(vf_gt(v, vf_zero()), v, vf_mul(pv, vm_expm1(v))))
ACT_MAP(k_leaky, vf_select(vf_gt(v, vf_zero()), v, vf_mul(v, pv)))

/* Same operation order as the reference: x + inv·(sin(x·α))². */
VM_INLINE vf snake1(vf v, vf a, vf inv)
{
    vf s = vm_sin(vf_mul(v, a));
    return vf_add(v, vf_mul(inv, vf_mul(s, s)));
}

static void k_snake(float *out, const float *x, int64_t n, float alpha, float inv)
{
    const vf a = vf_set1(alpha), iv = vf_set1(inv);
    int64_t i = 0;
    for (; i + VM_W <= n; i += VM_W)
        vf_store(out + i, snake1(vf_load(x + i), a, iv));
    if (i < n)
        vf_store_n(out + i, snake1(vf_load_n(x + i, (int)(n - i)), a, iv), (int)(n - i));
}

static void k_swiglu(float *out, const float *gate, const float *up, int64_t n)
{
    int64_t i = 0;
    for (; i + VM_W <= n; i += VM_W)
        vf_store(out + i, vf_mul(silu1(vf_load(gate + i)), vf_load(up + i)));
    if (i < n) {
        int r = (int)(n - i);
        vf_store_n(out + i, vf_mul(silu1(vf_load_n(gate + i, r)), vf_load_n(up + i, r)), r);
    }
}

const struct act_kernels VM_NAME(act, kernels) = {
    .gelu = k_gelu,
    .silu = k_silu,
    .mish = k_mish,
    .tanh = k_tanh,
    .exp = k_exp,
    .sin = k_sin,
    .elu = k_elu,
    .leaky = k_leaky,
    .snake = k_snake,
    .swiglu = k_swiglu,
};
