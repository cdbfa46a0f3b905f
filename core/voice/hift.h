/*
 * hift — the HiFT vocoder of GLM-4-Voice's decoder (spec §8): mel (80 × T) → 22.05 kHz wave
 * (256·T samples) and the NSF source signal it was built from.
 *
 * Shape letters: T mel frames, L = 256·T samples (hop_total = prod(upsample_rates)·istft hop),
 * H = nb_harmonics + 1 sinusoids, F = L/hop + 1 source STFT frames. Activations are
 * channel-major [C][T] (PyTorch's [C, T] of one batch element).
 *
 * Weights come from the decoder GGUF written by deploy/convert_decoder.py: tensor names are
 * the checkpoint's with the prefix "hift." and weight norm already folded (`weight` in
 * place of `weight_g`/`weight_v`), all f32. Hyperparameters are metadata keys "hift.*".
 *
 * Randomness (spec §8.3.3, §9): the nine harmonic phases are the first nine uniforms of
 * PyTorch's CPU MT19937 generator seeded with 42 (reproducible, computed at load); the
 * additive NSF noise is N(0,1)·amplitude, either drawn from a fast generator (production)
 * or taken from the caller (tests, `parley vocode --source-noise`).
 */
#ifndef PARLEY_HIFT_H
#define PARLEY_HIFT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/spectral.h"
#include "runtime/err.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"

#define HIFT_MAX_STAGES  4
#define HIFT_MAX_KERNELS 4
#define HIFT_N_DIL       3 /* dilations per ResBlock */
#define HIFT_F0_LAYERS   5

struct hift_hparams {
    int in_channels;                              /* 80   hift.in_channels */
    int base_channels;                            /* 512  hift.base_channels */
    int nb_harmonics;                             /* 8    hift.nb_harmonics (H = 9 sinusoids) */
    int sample_rate;                              /* 22050 */
    float nsf_alpha, nsf_sigma, voiced_threshold; /* 0.1, 0.003, 10 */
    float lrelu_slope, audio_limit;               /* 0.1, 0.99 */
    int n_stages;                                 /* len(upsample_rates) = 2 */
    int up_rates[HIFT_MAX_STAGES], up_kernels[HIFT_MAX_STAGES]; /* [8,8], [16,16] */
    int n_fft, hop;                                             /* 16, 4 */
    int n_kernels;                                              /* len(resblock_kernel_sizes) = 3 */
    int rb_kernels[HIFT_MAX_KERNELS], rb_dil[HIFT_MAX_KERNELS][HIFT_N_DIL];
    int src_kernels[HIFT_MAX_STAGES], src_dil[HIFT_MAX_STAGES][HIFT_N_DIL];
    int f0_channels; /* 512  f0_predictor cond_channels */
    int hop_total;   /* samples per mel frame: prod(up_rates) * hop = 256 */
};

/* ResBlock(ch, k, dilations): convs1 dilated, convs2 dilation 1, Snake before each. */
struct hift_resblock {
    int ch, k, dil[HIFT_N_DIL];
    const float *c1_w[HIFT_N_DIL], *c1_b[HIFT_N_DIL]; /* convs1.{i}.weight [ch][ch][k], bias [ch] */
    const float *c2_w[HIFT_N_DIL], *c2_b[HIFT_N_DIL]; /* convs2.{i} */
    const float *a1[HIFT_N_DIL], *a2[HIFT_N_DIL];     /* activations{1,2}.{i}.alpha [ch] */
};

struct hift_model {
    struct hift_hparams hp;
    const float *f0_w[HIFT_F0_LAYERS], *f0_b[HIFT_F0_LAYERS]; /* f0_predictor.condnet.{0,2,4,6,8}
                                                                 [C][C_in][3], [C] */
    const float *f0_cls_w, *f0_cls_b; /* f0_predictor.classifier [1][C], [1] */
    const float *src_w, *src_b;       /* m_source.l_linear [1][H], [1] */
    const float *pre_w, *pre_b;       /* conv_pre [base][80][7], [base] */
    const float *ups_w[HIFT_MAX_STAGES], *ups_b[HIFT_MAX_STAGES]; /* ups.{i} [C_in][C_out][K] */
    const float *sd_w[HIFT_MAX_STAGES], *sd_b[HIFT_MAX_STAGES];   /* source_downs.{i} */
    struct hift_resblock src_rb[HIFT_MAX_STAGES];                 /* source_resblocks.{i} */
    struct hift_resblock rb[HIFT_MAX_STAGES * HIFT_MAX_KERNELS];  /* resblocks.{i*nk + j} */
    const float *post_w, *post_b; /* conv_post [n_fft+2][C_last][7], [n_fft+2] */
    float phase[16];              /* [H] initial harmonic phases psi_h (psi_0 = 0) */
    struct spectral_plan plan;    /* n_fft/hop, periodic Hann */
};

/* Per-caller buffers for up to max_frames mel frames, allocated once (hift_state_init). */
struct hift_state {
    int64_t max_frames;
    float *f0a, *f0b;                    /* [f0_channels][T] */
    float *f0;                           /* [T] */
    float *stft;                         /* [n_fft+2][F] */
    float *x, *acc, *rbx, *t1, *t2, *si; /* [C][T_stage] each, largest stage */
    float *spec;                         /* [n_fft+2][F] conv_post output */
    float *scratch;                      /* conv / spectral scratch */
    uint64_t rng[2];                     /* production NSF noise generator */
};

/* Reads hyperparameters and weights from an open decoder GGUF (kept open by the caller for
 * the model's lifetime). Returns -1 naming the key or tensor that is missing or wrong. */
int hift_load(struct hift_model *m, const struct gguf_file *f, struct err *e);
void hift_free(struct hift_model *m);

/* As flow_load_from (flow.h): weights from a function, hyperparameters given. */
typedef const float *hift_tensor_fn(void *ctx, const char *name, int n_dims, const int64_t *shape,
                                    struct err *e);
int hift_load_from(struct hift_model *m, const struct hift_hparams *hp, hift_tensor_fn *fn,
                   void *ctx, struct err *e);

int hift_state_init(struct hift_state *s, const struct hift_model *m, int64_t max_frames,
                    struct err *e);
void hift_state_free(struct hift_state *s);

/*
 * wave [L] (and source [L] when not NULL) = HiFT(mel [80][T]). cache_src: NULL or
 * [hop_total] samples spliced over the start of the source (spec §8.3.4). noise: NULL (draw
 * from s->rng) or [H][L] standard normal values for the NSF additive noise. f0_out: NULL or
 * [T]. T must be 1..s->max_frames. Returns -1 on a bad length.
 */
int hift_forward(const struct hift_model *m, struct hift_state *s, struct pool *pool, float *wave,
                 float *source, float *f0_out, const float *mel, int64_t n_frames,
                 const float *cache_src, const float *noise, struct err *e);

/* The first n uniforms in [0,1) of PyTorch's CPU generator after manual_seed(seed)
 * (MT19937, 24-bit float path of torch.rand). */
void hift_torch_rand(float *out, int n, uint64_t seed);

/* Multiply-adds per mel frame (for benchmarks). */
double hift_flops_per_frame(const struct hift_model *m);

#endif
