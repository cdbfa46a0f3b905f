// pcm — sample format conversion and a streaming resampler. Pure functions, no DOM: the page,
// the worklets and the node unit tests (tests/browser/unit.mjs) all import this file.

// Float32 in [-1, 1] -> little-endian signed 16-bit (clipped, rounded).
export function floatToPcm16(f) {
    const out = new Int16Array(f.length);
    for (let i = 0; i < f.length; i++) {
        let s = f[i];
        if (!(s > -1))
            s = -1; // also maps NaN to -1 rather than 0x8000 garbage
        else if (s > 1)
            s = 1;
        out[i] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
    }
    return out;
}

// Little-endian 16-bit bytes (ArrayBuffer, any view) -> Float32. An odd trailing byte is ignored.
export function pcm16ToFloat(data) {
    const bytes = data instanceof ArrayBuffer ?
        new Uint8Array(data) :
        new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const n = bytes.length >> 1;
    const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true) / 32768;
    return out;
}

// Level of a block in dBFS (RMS; -120 for silence).
export function rmsDb(f) {
    let s = 0;
    for (let i = 0; i < f.length; i++) s += f[i] * f[i];
    const rms = Math.sqrt(s / Math.max(1, f.length));
    return rms > 1e-6 ? 20 * Math.log10(rms) : -120;
}

// Streaming resampler from rate `from` to rate `to` for mono Float32 blocks of any length.
// Windowed-sinc interpolation (8 zero crossings each side, Blackman window) with the cut-off at
// the lower Nyquist frequency, so downsampling 48 kHz -> 16 kHz does not alias. State carries
// across blocks: feeding a signal in pieces gives the same samples as feeding it whole.
export class Resampler {
    constructor(from, to, zeros = 8) {
        this.from = from;
        this.to = to;
        this.step = from / to;                   // input samples per output sample
        this.cut = Math.min(1, to / from);       // cut-off relative to the input Nyquist
        this.half = Math.ceil(zeros / this.cut); // taps each side, in input samples
        this.hist = new Float32Array(0);         // input kept for the next block
        this.pos = 0; // next output position, in input samples relative to hist[0]
        this.primed = false;
        this.cache = new Map(); // frac -> taps; ratios of real rates repeat few fractions
    }

    taps(frac) {
        const key = Math.round(frac * 1e6);
        let t = this.cache.get(key);
        if (!t) {
            const h = this.half;
            t = new Float32Array(2 * h);
            for (let k = -h + 1; k <= h; k++)
                t[k + h - 1] = Resampler.kernel(k - frac, this.cut, h);
            if (this.cache.size < 1024) this.cache.set(key, t);
        }
        return t;
    }

    static kernel(x, cut, half) {
        if (Math.abs(x) >= half) return 0;
        const w =
            0.42 + 0.5 * Math.cos(Math.PI * x / half) + 0.08 * Math.cos(2 * Math.PI * x / half);
        const t = Math.PI * x * cut;
        return (x === 0 ? cut : Math.sin(t) / (Math.PI * x)) * w;
    }

    process(input) {
        if (this.from === this.to) return Float32Array.from(input);
        if (!this.primed) {
            // Start with `half` zeros of history so the first output sample is input[0].
            this.hist = new Float32Array(this.half);
            this.pos = this.half;
            this.primed = true;
        }
        const buf = new Float32Array(this.hist.length + input.length);
        buf.set(this.hist);
        buf.set(input, this.hist.length);
        const out = [];
        const h = this.half;
        while (this.pos + h < buf.length) {
            const c = Math.floor(this.pos);
            const frac = this.pos - c;
            const t = this.taps(frac);
            let acc = 0;
            for (let k = Math.max(-h + 1, -c); k <= h; k++) acc += buf[c + k] * t[k + h - 1];
            out.push(acc);
            this.pos += this.step;
        }
        // Keep what the next outputs still need: from pos - half on.
        const keep = Math.max(0, Math.floor(this.pos) - h);
        this.hist = buf.slice(keep);
        this.pos -= keep;
        return Float32Array.from(out);
    }
}
