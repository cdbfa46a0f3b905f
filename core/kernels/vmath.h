/*
 * vmath — the SIMD layer shared by the act, attn kernel files compiled for AVX2 and AVX-512:
 * a vector type `vf` of VM_W float lanes with thin wrappers, and vector exp, expm1, tanh, sin
 * and GELU built on them. Include it only from files compiled with the ISA flags
 * (*_avx2.c, *_avx512.c): the ISA is taken from the compiler's predefined macros, and the
 * kernels written once against the wrappers are named VM_NAME(module, name) →
 * module_avx2_name or module_avx512_name.
 *
 * Largest relative error against the exact function, measured on dense sweeps (test_act.c
 * checks 1e-6 on every function):
 *   exp 8.3e-8, silu 1.7e-7, tanh 1.4e-7, mish 2.9e-7, sin 7e-8 (|x| <= π/4; 1e-7 absolute
 *   anywhere: Cody-Waite reduction for |x| <= 8192, libm sinf beyond), snake 5e-7,
 *   gelu 8.7e-7 (near x = −1.39, where ½(1 − erf) cancels; elsewhere ~2e-7, including the
 *   far negative tail). Results below FLT_MIN are denormal or 0 (e^x == 0 for x < −103.97).
 * Vector lanes are independent: an element's result never depends on its neighbours or on
 * its position in the vector, so the split of an array between threads cannot change it.
 */
#ifndef PARLEY_VMATH_H
#define PARLEY_VMATH_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define VM_INLINE static inline __attribute__((always_inline))

#if defined(__AVX512F__)

#define VM_W            16
#define VM_NAME(mod, f) mod##_avx512_##f
typedef __m512 vf;
typedef __m512i vi;
typedef __mmask16 vm;

VM_INLINE vf vf_zero(void)
{
    return _mm512_setzero_ps();
}
VM_INLINE vf vf_set1(float x)
{
    return _mm512_set1_ps(x);
}
VM_INLINE vf vf_load(const float *p)
{
    return _mm512_loadu_ps(p);
}
VM_INLINE void vf_store(float *p, vf v)
{
    _mm512_storeu_ps(p, v);
}
/* The first n (0..VM_W) lanes from p, the others 0; nothing past p[n-1] is touched. */
VM_INLINE vf vf_load_n(const float *p, int n)
{
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
VM_INLINE void vf_store_n(float *p, vf v, int n)
{
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v);
}
VM_INLINE vf vf_load_bf16(const uint16_t *p)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
VM_INLINE vf vf_load_f16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
VM_INLINE vf vf_add(vf a, vf b)
{
    return _mm512_add_ps(a, b);
}
VM_INLINE vf vf_sub(vf a, vf b)
{
    return _mm512_sub_ps(a, b);
}
VM_INLINE vf vf_mul(vf a, vf b)
{
    return _mm512_mul_ps(a, b);
}
VM_INLINE vf vf_div(vf a, vf b)
{
    return _mm512_div_ps(a, b);
}
VM_INLINE vf vf_fma(vf a, vf b, vf c)
{
    return _mm512_fmadd_ps(a, b, c);
} /* a*b + c */
VM_INLINE vf vf_fnma(vf a, vf b, vf c)
{
    return _mm512_fnmadd_ps(a, b, c);
} /* c - a*b */
VM_INLINE vf vf_max(vf a, vf b)
{
    return _mm512_max_ps(a, b);
}
VM_INLINE vf vf_min(vf a, vf b)
{
    return _mm512_min_ps(a, b);
}
VM_INLINE vf vf_and(vf a, vf b)
{
    return _mm512_and_ps(a, b);
}
VM_INLINE vf vf_or(vf a, vf b)
{
    return _mm512_or_ps(a, b);
}
VM_INLINE vf vf_xor(vf a, vf b)
{
    return _mm512_xor_ps(a, b);
}
VM_INLINE vf vf_round(vf a)
{
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
VM_INLINE vm vf_lt(vf a, vf b)
{
    return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ);
}
VM_INLINE vm vf_gt(vf a, vf b)
{
    return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ);
}
VM_INLINE vm vf_ge(vf a, vf b)
{
    return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ);
}
VM_INLINE vm vf_eq(vf a, vf b)
{
    return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ);
}
VM_INLINE vm vf_neq(vf a, vf b)
{
    return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ);
}
VM_INLINE vm vf_isnan(vf a)
{
    return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
}
VM_INLINE vf vf_select(vm m, vf a, vf b)
{
    return _mm512_mask_blend_ps(m, b, a);
} /* m ? a : b */
VM_INLINE int vm_any(vm m)
{
    return m != 0;
}
VM_INLINE vm vm_lanes(int n)
{
    return (__mmask16)((1u << n) - 1);
} /* the first n lanes */
VM_INLINE float vf_hmax(vf a)
{
    return _mm512_reduce_max_ps(a);
}
VM_INLINE vi vf_to_vi(vf a)
{
    return _mm512_cvtps_epi32(a);
} /* a holds integers */
VM_INLINE vf vi_as_vf(vi a)
{
    return _mm512_castsi512_ps(a);
}
VM_INLINE vi vi_set1(int32_t x)
{
    return _mm512_set1_epi32(x);
}
VM_INLINE vi vi_add(vi a, vi b)
{
    return _mm512_add_epi32(a, b);
}
VM_INLINE vi vi_sub(vi a, vi b)
{
    return _mm512_sub_epi32(a, b);
}
VM_INLINE vi vi_and(vi a, vi b)
{
    return _mm512_and_si512(a, b);
}
VM_INLINE vi vi_srai1(vi a)
{
    return _mm512_srai_epi32(a, 1);
}
VM_INLINE vi vi_slli(vi a, const int s)
{
    return _mm512_slli_epi32(a, (unsigned)s);
}
VM_INLINE vm vi_nonzero(vi a)
{
    return _mm512_test_epi32_mask(a, a);
}

#elif defined(__AVX2__)

#define VM_W            8
#define VM_NAME(mod, f) mod##_avx2_##f
typedef __m256 vf;
typedef __m256i vi;
typedef __m256 vm; /* all-ones lanes where true */

VM_INLINE vf vf_zero(void)
{
    return _mm256_setzero_ps();
}
VM_INLINE vf vf_set1(float x)
{
    return _mm256_set1_ps(x);
}
VM_INLINE vf vf_load(const float *p)
{
    return _mm256_loadu_ps(p);
}
VM_INLINE void vf_store(float *p, vf v)
{
    _mm256_storeu_ps(p, v);
}
VM_INLINE __m256i vm_first(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
/* The first n (0..VM_W) lanes from p, the others 0; nothing past p[n-1] is touched. */
VM_INLINE vf vf_load_n(const float *p, int n)
{
    return _mm256_maskload_ps(p, vm_first(n));
}
VM_INLINE void vf_store_n(float *p, vf v, int n)
{
    _mm256_maskstore_ps(p, vm_first(n), v);
}
VM_INLINE vf vf_load_bf16(const uint16_t *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
VM_INLINE vf vf_load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
VM_INLINE vf vf_add(vf a, vf b)
{
    return _mm256_add_ps(a, b);
}
VM_INLINE vf vf_sub(vf a, vf b)
{
    return _mm256_sub_ps(a, b);
}
VM_INLINE vf vf_mul(vf a, vf b)
{
    return _mm256_mul_ps(a, b);
}
VM_INLINE vf vf_div(vf a, vf b)
{
    return _mm256_div_ps(a, b);
}
VM_INLINE vf vf_fma(vf a, vf b, vf c)
{
    return _mm256_fmadd_ps(a, b, c);
}
VM_INLINE vf vf_fnma(vf a, vf b, vf c)
{
    return _mm256_fnmadd_ps(a, b, c);
}
VM_INLINE vf vf_max(vf a, vf b)
{
    return _mm256_max_ps(a, b);
}
VM_INLINE vf vf_min(vf a, vf b)
{
    return _mm256_min_ps(a, b);
}
VM_INLINE vf vf_and(vf a, vf b)
{
    return _mm256_and_ps(a, b);
}
VM_INLINE vf vf_or(vf a, vf b)
{
    return _mm256_or_ps(a, b);
}
VM_INLINE vf vf_xor(vf a, vf b)
{
    return _mm256_xor_ps(a, b);
}
VM_INLINE vf vf_round(vf a)
{
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
VM_INLINE vm vf_lt(vf a, vf b)
{
    return _mm256_cmp_ps(a, b, _CMP_LT_OQ);
}
VM_INLINE vm vf_gt(vf a, vf b)
{
    return _mm256_cmp_ps(a, b, _CMP_GT_OQ);
}
VM_INLINE vm vf_ge(vf a, vf b)
{
    return _mm256_cmp_ps(a, b, _CMP_GE_OQ);
}
VM_INLINE vm vf_eq(vf a, vf b)
{
    return _mm256_cmp_ps(a, b, _CMP_EQ_OQ);
}
VM_INLINE vm vf_neq(vf a, vf b)
{
    return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ);
}
VM_INLINE vm vf_isnan(vf a)
{
    return _mm256_cmp_ps(a, a, _CMP_UNORD_Q);
}
VM_INLINE vf vf_select(vm m, vf a, vf b)
{
    return _mm256_blendv_ps(b, a, m);
}
VM_INLINE int vm_any(vm m)
{
    return _mm256_movemask_ps(m) != 0;
}
VM_INLINE vm vm_lanes(int n)
{
    return _mm256_castsi256_ps(vm_first(n));
}
VM_INLINE float vf_hmax(vf a)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
VM_INLINE vi vf_to_vi(vf a)
{
    return _mm256_cvtps_epi32(a);
}
VM_INLINE vf vi_as_vf(vi a)
{
    return _mm256_castsi256_ps(a);
}
VM_INLINE vi vi_set1(int32_t x)
{
    return _mm256_set1_epi32(x);
}
VM_INLINE vi vi_add(vi a, vi b)
{
    return _mm256_add_epi32(a, b);
}
VM_INLINE vi vi_sub(vi a, vi b)
{
    return _mm256_sub_epi32(a, b);
}
VM_INLINE vi vi_and(vi a, vi b)
{
    return _mm256_and_si256(a, b);
}
VM_INLINE vi vi_srai1(vi a)
{
    return _mm256_srai_epi32(a, 1);
}
VM_INLINE vi vi_slli(vi a, const int s)
{
    return _mm256_slli_epi32(a, s);
}
VM_INLINE vm vi_nonzero(vi a)
{
    return _mm256_castsi256_ps(
        _mm256_xor_si256(_mm256_cmpeq_epi32(a, _mm256_setzero_si256()), _mm256_set1_epi32(-1)));
}

#else
#error "vmath.h needs AVX2 or AVX-512 compiler flags"
#endif

/* Sum of the lanes in a fixed order (pairwise halves), the same at every call. */
VM_INLINE float vf_hsum(vf a)
{
    float t[VM_W];
    vf_store(t, a);
    for (int w = VM_W / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++)
            t[i] += t[i + w];
    return t[0];
}

VM_INLINE vf vf_abs(vf a)
{
    return vf_and(a, vi_as_vf(vi_set1(0x7fffffff)));
}
VM_INLINE vf vf_signbit(vf a)
{
    return vf_and(a, vi_as_vf(vi_set1((int32_t)0x80000000u)));
}

/* 2^n for integer lanes n in [-126, 127]. */
VM_INLINE vf vi_pow2(vi n)
{
    return vi_as_vf(vi_slli(vi_add(n, vi_set1(127)), 23));
}

/*
 * Shared by exp and expm1: x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two so n·C1 is
 * exact), and e^r − 1 = r + r²·P(r) (Cephes expf polynomial, relative error 1e-9 on the
 * interval before float rounding).
 */
VM_INLINE vf vm_exp_reduce(vf x, vf *n)
{
    *n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fnma(*n, vf_set1(0.693359375f), x);
    return vf_fnma(*n, vf_set1(-2.12194440e-4f), r);
}

VM_INLINE vf vm_expm1_poly(vf r)
{
    vf p = vf_set1(1.9875691500e-4f);
    p = vf_fma(p, r, vf_set1(1.3981999507e-3f));
    p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
    return vf_fma(p, vf_mul(r, r), r);
}

/* e^x: +inf above 88.7228, 0 below -103.972, NaN for NaN. */
VM_INLINE vf vm_exp(vf x)
{
    const vf hi = vf_set1(88.7228394f), lo = vf_set1(-103.972084f);
    vf n, xc = vf_min(vf_max(x, lo), hi);
    vf r = vm_exp_reduce(xc, &n);
    vf y = vf_add(vm_expm1_poly(r), vf_set1(1.0f));
    /* 2^n in two factors so that n from -150 to 128 (denormal results, and e^88.7) work */
    vi ni = vf_to_vi(n), n1 = vi_srai1(ni);
    y = vf_mul(vf_mul(y, vi_pow2(n1)), vi_pow2(vi_sub(ni, n1)));
    y = vf_select(vf_gt(x, hi), vf_set1(INFINITY), y);
    y = vf_select(vf_lt(x, lo), vf_zero(), y);
    return vf_select(vf_isnan(x), x, y);
}

/* e^x − 1 without the cancellation of exp(x) − 1 near 0: 2^n·(e^r − 1) + (2^n − 1). */
VM_INLINE vf vm_expm1(vf x)
{
    const vf hi = vf_set1(88.0f);
    vf n, xc = vf_min(vf_max(x, vf_set1(-20.0f)), hi); /* below -20 the result is -1 */
    vf em = vm_expm1_poly(vm_exp_reduce(xc, &n));
    vf s = vi_pow2(vf_to_vi(n));
    vf y = vf_fma(em, s, vf_sub(s, vf_set1(1.0f)));
    vm big = vf_gt(x, hi);
    if (vm_any(big)) /* e^x − 1 == e^x there */
        y = vf_select(big, vm_exp(x), y);
    return vf_select(vf_isnan(x), x, y);
}

/* tanh: odd polynomial below 0.625 (Cephes tanhf), 1 − 2/(e^{2|x|} + 1) above. */
VM_INLINE vf vm_tanh(vf x)
{
    vf a = vf_abs(x), z = vf_mul(x, x);
    vf p = vf_set1(-5.70498872745e-3f);
    p = vf_fma(p, z, vf_set1(2.06390887954e-2f));
    p = vf_fma(p, z, vf_set1(-5.37397155531e-2f));
    p = vf_fma(p, z, vf_set1(1.33314422036e-1f));
    p = vf_fma(p, z, vf_set1(-3.33332819422e-1f));
    vf small = vf_fma(vf_mul(p, z), x, x);
    vf e = vm_exp(vf_add(a, a));
    vf big = vf_sub(vf_set1(1.0f), vf_div(vf_set1(2.0f), vf_add(e, vf_set1(1.0f))));
    big = vf_or(big, vf_signbit(x));
    return vf_select(vf_lt(a, vf_set1(0.625f)), small, big);
}

/*
 * sin: x = j·π/2 + r (π/2 in three parts, exact products for |j| < 2^16), then the Cephes
 * sinf/cosf polynomials on |r| <= π/4 chosen by the quadrant. Lanes with |x| > 8192 (never
 * seen in the models) go through libm.
 */
VM_INLINE vf vm_sin(vf x)
{
    vf j = vf_round(vf_mul(x, vf_set1(0.636619772367581343f)));
    vf r = vf_fnma(j, vf_set1(1.5703125f), x);
    r = vf_fnma(j, vf_set1(4.837512969970703125e-4f), r);
    r = vf_fnma(j, vf_set1(7.54978995489188216e-8f), r);
    vf z = vf_mul(r, r);
    vf s = vf_set1(-1.9515295891e-4f);
    s = vf_fma(s, z, vf_set1(8.3321608736e-3f));
    s = vf_fma(s, z, vf_set1(-1.6666654611e-1f));
    s = vf_fma(vf_mul(s, z), r, r);
    vf c = vf_set1(2.443315711809948e-5f);
    c = vf_fma(c, z, vf_set1(-1.388731625493765e-3f));
    c = vf_fma(c, z, vf_set1(4.166664568298827e-2f));
    c = vf_fma(c, vf_mul(z, z), vf_fnma(vf_set1(0.5f), z, vf_set1(1.0f)));
    vi q = vf_to_vi(j);
    vf y = vf_select(vi_nonzero(vi_and(q, vi_set1(1))), c, s);
    y = vf_xor(y, vi_as_vf(vi_slli(vi_and(q, vi_set1(2)), 30)));
    vm far = vf_gt(vf_abs(x), vf_set1(8192.0f));
    if (vm_any(far)) {
        float tx[VM_W], ty[VM_W];
        vf_store(tx, x);
        vf_store(ty, y);
        for (int i = 0; i < VM_W; i++)
            if (!(fabsf(tx[i]) <= 8192.0f))
                ty[i] = sinf(tx[i]);
        y = vf_load(ty);
    }
    return y;
}

/*
 * GELU, exact form: x·Φ(x), Φ(x) = ½·erfc(−x/√2). With z = |x|/√2:
 *   z < 1:   erf(z) = z·P(z²)                       (Cephes erff polynomial)
 *   z >= 1:  erfc(z) = e^{−z²}·Q(1/z), Q fitted on [1, 2.5] and [2.5, 10] (degree 8), and
 *            e^{−z²} = e^{−x²/2} from x² split exactly in two (FMA), so the far negative
 *            tail keeps its relative accuracy (1 + erf(x/√2) in float would lose it).
 */
VM_INLINE vf vm_gelu(vf x)
{
    static const float qa[9] = { 5.450689087e-03f,  -5.095655163e-02f, 2.061594118e-01f,
                                 -4.767080874e-01f, 6.822954343e-01f,  -5.634378676e-01f,
                                 6.985242258e-02f,  5.543131834e-01f,  6.149407633e-04f };
    static const float qb[9] = { -1.780399297e-01f, 7.238310993e-01f,  -1.127751549e+00f,
                                 8.014238409e-01f,  -7.915480375e-02f, -2.714472976e-01f,
                                 -8.954711106e-04f, 5.642324069e-01f,  -8.875804253e-07f };
    vf a = vf_min(vf_abs(x), vf_set1(15.0f));
    vf z = vf_mul(a, vf_set1(0.707106781186547524f));
    /* erf for z < 1 */
    vf zz = vf_mul(z, z);
    vf p = vf_set1(7.853980587e-05f);
    p = vf_fma(p, zz, vf_set1(-8.010232714e-04f));
    p = vf_fma(p, zz, vf_set1(5.188332623e-03f));
    p = vf_fma(p, zz, vf_set1(-2.685381494e-02f));
    p = vf_fma(p, zz, vf_set1(1.128358524e-01f));
    p = vf_fma(p, zz, vf_set1(-3.761262584e-01f));
    p = vf_fma(p, zz, vf_set1(1.128379166e+00f));
    vf erf_s = vf_or(vf_mul(p, z), vf_signbit(x));
    vf phi_small = vf_fma(erf_s, vf_set1(0.5f), vf_set1(0.5f));
    /* erfc for z >= 1 */
    vf t = vf_div(vf_set1(1.0f), vf_min(vf_max(z, vf_set1(1.0f)), vf_set1(10.0f)));
    vm in_a = vf_lt(z, vf_set1(2.5f));
    vf q = vf_select(in_a, vf_set1(qa[0]), vf_set1(qb[0]));
    for (int k = 1; k < 9; k++)
        q = vf_fma(q, t, vf_select(in_a, vf_set1(qa[k]), vf_set1(qb[k])));
    vf x2 = vf_mul(a, a), x2lo = vf_fma(a, a, vf_sub(vf_zero(), x2));
    vf e = vm_exp(vf_mul(x2, vf_set1(-0.5f)));
    e = vf_fnma(e, vf_mul(x2lo, vf_set1(0.5f)), e); /* e·(1 − lo/2) = e^{−(x2 + lo)/2} */
    vf half_erfc = vf_mul(vf_mul(e, q), vf_set1(0.5f));
    vf phi_tail = vf_select(vf_gt(x, vf_zero()), vf_sub(vf_set1(1.0f), half_erfc), half_erfc);
    vf phi = vf_select(vf_lt(z, vf_set1(1.0f)), phi_small, phi_tail);
    return vf_mul(x, phi);
}

#endif
