#include "runtime/cpu.h"

#include <cpuid.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int level_selected = -1; /* -1 until first asked */

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

enum cpu_level cpu_detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return CPU_LEVEL_GENERIC;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx || !fma || !f16c)
        return CPU_LEVEL_GENERIC;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* the OS saves SSE and AVX state */
        return CPU_LEVEL_GENERIC;
    if (__get_cpuid_max(0, NULL) < 7)
        return CPU_LEVEL_GENERIC;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int avx512 = ((b >> 16) & 1) /* F */ && ((b >> 17) & 1) /* DQ */ && ((b >> 30) & 1) /* BW */
                 && ((b >> 31) & 1) /* VL */;
    int vnni = (c >> 11) & 1; /* AVX512_VNNI (every AVX-512 BF16 CPU has it) */
    if (!avx2)
        return CPU_LEVEL_GENERIC;
    __cpuid_count(7, 1, a, b, c, d);
    int bf16 = (a >> 5) & 1;
    if (avx512 && bf16 && vnni && (xcr0 & 0xe6) == 0xe6) /* opmask + ZMM state saved too */
        return CPU_LEVEL_AVX512;
    return CPU_LEVEL_AVX2;
}

const char *cpu_level_name(enum cpu_level level)
{
    switch (level) {
    case CPU_LEVEL_GENERIC: return "generic";
    case CPU_LEVEL_AVX2: return "avx2";
    case CPU_LEVEL_AVX512: return "avx512";
    }
    return "?";
}

enum cpu_level cpu_level(void)
{
    if (level_selected < 0) {
        enum cpu_level best = cpu_detect(), want = best;
        const char *env = getenv("PARLEY_CPU");
        for (int l = CPU_LEVEL_GENERIC; env && l <= CPU_LEVEL_AVX512; l++)
            if (strcmp(env, cpu_level_name((enum cpu_level)l)) == 0 && l < (int)best)
                want = (enum cpu_level)l;
        level_selected = (int)want;
    }
    return (enum cpu_level)level_selected;
}

int cpu_set_level(enum cpu_level level)
{
    if (level > cpu_detect())
        return -1;
    level_selected = (int)level;
    return 0;
}
