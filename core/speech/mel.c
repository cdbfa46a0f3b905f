/* mel — Whisper log-mel features (see mel.h). */
#include "speech/mel.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Slaney mel scale as transformers' hertz_to_mel / mel_to_hertz (mel_scale="slaney"). */
static double hz_to_mel(double f)
{
    double logstep = 27.0 / log(6.4);
    return f >= 1000.0 ? 15.0 + log(f / 1000.0) * logstep : 3.0 * f / 200.0;
}

static double mel_to_hz(double m)
{
    double logstep = log(6.4) / 27.0;
    return m >= 15.0 ? 1000.0 * exp(logstep * (m - 15.0)) : 200.0 * m / 3.0;
}

/* np.linspace(a, b, num)[i]: i·step + a, the last point exactly b. */
static double linspace(double a, double b, int num, int i)
{
    return i == num - 1 ? b : i * ((b - a) / (num - 1)) + a;
}

int mel_init(struct mel *m, int n_mels, int n_fft, int hop, int sample_rate, struct err *e)
{
    memset(m, 0, sizeof *m);
    if (n_mels < 1 || n_mels > 1024 || n_fft < 4 || n_fft > 8192 || hop < 1 || hop > n_fft ||
        sample_rate < 1000)
        return err_set(e, "mel: bad sizes (%d mels, n_fft %d, hop %d, %d Hz)", n_mels, n_fft, hop,
                       sample_rate);
    m->n_mels = n_mels;
    m->n_fft = n_fft;
    m->hop = hop;
    m->n_bins = n_fft / 2 + 1;
    m->sample_rate = sample_rate;
    m->window = malloc((size_t)n_fft * sizeof *m->window);
    m->filters = malloc((size_t)n_mels * m->n_bins * sizeof *m->filters);
    double *freqs = malloc((size_t)(n_mels + 2) * sizeof *freqs);
    if (!m->window || !m->filters || !freqs) {
        free(freqs);
        mel_free(m);
        return err_set(e, "mel: out of memory");
    }
    spectral_hann_torch(m->window, n_fft, 1);
    /* mel_filter_bank(num_frequency_bins=B, num_mel_filters=M, min 0, max sr/2, norm and
     * scale "slaney"): triangles between consecutive mel points, area-normalised */
    double mel_max = hz_to_mel((double)(sample_rate / 2));
    for (int i = 0; i < n_mels + 2; i++)
        freqs[i] = mel_to_hz(linspace(hz_to_mel(0.0), mel_max, n_mels + 2, i));
    for (int k = 0; k < m->n_bins; k++) {
        double fk = linspace(0.0, (double)(sample_rate / 2), m->n_bins, k);
        for (int j = 0; j < n_mels; j++) {
            double down = -(freqs[j] - fk) / (freqs[j + 1] - freqs[j]);
            double up = (freqs[j + 2] - fk) / (freqs[j + 2] - freqs[j + 1]);
            double w = down < up ? down : up;
            if (w < 0)
                w = 0;
            double enorm = 2.0 / (freqs[j + 2] - freqs[j]);
            m->filters[(size_t)j * m->n_bins + k] = (float)(w * enorm);
        }
    }
    free(freqs);
    int n = n_fft, b = m->n_bins;
    m->basis = malloc((size_t)2 * b * n * sizeof *m->basis);
    if (!m->basis) {
        mel_free(m);
        return err_set(e, "mel: out of memory");
    }
    for (int k = 0; k < b; k++)
        for (int i = 0; i < n; i++) {
            /* angle reduced exactly: k·i mod N */
            double a = 2.0 * M_PI * (double)((int64_t)k * i % n) / n, w = m->window[i];
            m->basis[(size_t)k * n + i] = w * cos(a);
            m->basis[(size_t)(b + k) * n + i] = -w * sin(a);
        }
    return 0;
}

void mel_free(struct mel *m)
{
    free(m->window);
    free(m->filters);
    free(m->basis);
    m->window = NULL;
    m->filters = NULL;
    m->basis = NULL;
}

int64_t mel_scratch_floats(const struct mel *m, int64_t max_frames)
{
    /* frames [F][N] and spectrum [2B][F] in double, the spectrum [2B][F], power [B][F] and
     * mel [M][F] in float */
    return max_frames *
           (2 * (int64_t)m->n_fft + 4 * m->n_bins + 2 * m->n_bins + m->n_bins + m->n_mels);
}

void mel_log10(const struct mel *m, float *out, const float *x, int64_t l, int64_t f0, int64_t nf,
               float *scratch)
{
    int n = m->n_fft, b = m->n_bins, nm = m->n_mels;
    double *frames = (double *)(void *)scratch;            /* [F][N] */
    double *spec_d = frames + nf * n;                      /* [2B][F] */
    float *spec = (float *)(spec_d + 2 * (int64_t)b * nf); /* [2B][F] */
    float *power = spec + 2 * (int64_t)b * nf;             /* [B][F] */
    float *mels = power + (int64_t)b * nf;                 /* [M][F] */
    for (int64_t f = 0; f < nf; f++) {
        double *row = frames + f * n;
        int64_t a = (f0 + f) * m->hop - n / 2; /* signal index of row[0] */
        for (int i = 0; i < n; i++) {          /* reflection, the edge sample not repeated */
            int64_t t = a + i;
            t = t < 0 ? -t : t >= l ? 2 * (l - 1) - t : t;
            row[i] = x[t];
        }
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 2 * b, (int)nf, n, 1.0, m->basis, n,
                frames, n, 0.0, spec_d, (int)nf);
    for (int64_t i = 0; i < 2 * (int64_t)b * nf; i++)
        spec[i] = (float)spec_d[i];
    spectral_power(power, spec, b, nf);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nm, (int)nf, b, 1.0f, m->filters, b,
                power, (int)nf, 0.0f, mels, (int)nf);
    for (int j = 0; j < nm; j++)
        for (int64_t f = 0; f < nf; f++) {
            float v = mels[(int64_t)j * nf + f];
            out[f * nm + j] = log10f(v > 1e-10f ? v : 1e-10f);
        }
}
