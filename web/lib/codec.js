// codec — the audio on the wire: raw Opus packets (one 20 ms packet per WebSocket message)
// through WebCodecs where the browser has it, little-endian PCM16 otherwise. Browser-only.
import {floatToPcm16, pcm16ToFloat, Resampler} from './pcm.js';

const OPUS_RATE = 48000;
const OPUS_ENC = {
    codec: 'opus',
    sampleRate: OPUS_RATE,
    numberOfChannels: 1,
    bitrate: 32000,
    opus: { frameDuration: 20000, format: 'opus', complexity: 5 }
};
const OPUS_DEC = {
    codec: 'opus',
    sampleRate: OPUS_RATE,
    numberOfChannels: 1
};
export const PCM_IN_RATE = 16000; // what the model listens at: no point sending more

// 'opus' when this browser can encode and decode Opus through WebCodecs, else 'pcm16'.
export async function detectCodec() {
    try {
        if (typeof AudioEncoder === 'undefined' || typeof AudioDecoder === 'undefined')
            return 'pcm16';
        const [e, d] = await Promise.all(
            [AudioEncoder.isConfigSupported(OPUS_ENC), AudioDecoder.isConfigSupported(OPUS_DEC)]);
        return e.supported && d.supported ? 'opus' : 'pcm16';
    } catch {
        return 'pcm16';
    }
}

// Microphone frames (Float32 at ctxRate) -> binary messages via send(Uint8Array).
export class Encoder {
    constructor(codec, ctxRate, send, onError) {
        this.codec = codec;
        this.send = send;
        this.rate = codec === 'opus' ? OPUS_RATE : PCM_IN_RATE; // the session's input rate
        this.rs = new Resampler(ctxRate, this.rate);
        this.ts = 0;
        if (codec === 'opus') {
            this.enc = new AudioEncoder({
                output: (chunk) => {
                    const b = new Uint8Array(chunk.byteLength);
                    chunk.copyTo(b);
                    this.send(b);
                },
                error: (e) => onError(`Opus encoder: ${e.message}`),
            });
            this.enc.configure(OPUS_ENC);
        }
    }

    encode(frame) {
        const x = this.rs.process(frame);
        if (!x.length) return;
        if (this.codec === 'pcm16') {
            this.send(new Uint8Array(floatToPcm16(x).buffer));
            return;
        }
        if (this.enc.state !== 'configured') return;
        const data = new AudioData({
            format: 'f32-planar',
            sampleRate: OPUS_RATE,
            numberOfFrames: x.length,
            numberOfChannels: 1,
            timestamp: this.ts,
            data: x
        });
        this.ts += Math.round(x.length * 1e6 / OPUS_RATE);
        this.enc.encode(data);
        data.close();
    }

    close() {
        if (this.enc && this.enc.state !== 'closed') this.enc.close();
    }
}

// Binary answer messages -> Float32 at ctxRate via out(Float32Array), in arrival order.
export class Decoder {
    constructor(codec, ctxRate, out, onError) {
        this.codec = codec;
        this.out = out;
        // PCM16 answers come at the context rate when it is a rate the server accepts.
        this.rate = codec === 'opus' ? OPUS_RATE : Math.min(48000, Math.max(8000, ctxRate));
        this.rs = new Resampler(this.rate, ctxRate);
        this.ts = 0;
        if (codec === 'opus') {
            this.dec = new AudioDecoder({
                output: (ad) => {
                    const f = new Float32Array(ad.numberOfFrames);
                    ad.copyTo(f, { planeIndex: 0, format: 'f32-planar' });
                    ad.close();
                    this.emit(f);
                },
                error: (e) => onError(`Opus decoder: ${e.message}`),
            });
            this.dec.configure(OPUS_DEC);
        }
    }

    emit(f) {
        const x = this.rs.process(f);
        if (x.length) this.out(x);
    }

    decode(buf) {
        if (this.codec === 'pcm16') {
            this.emit(pcm16ToFloat(buf));
            return;
        }
        if (this.dec.state !== 'configured') return;
        this.dec.decode(new EncodedAudioChunk({ type: 'key', timestamp: this.ts, data: buf }));
        this.ts += 20000;
    }

    // Drops decoded audio still queued in the decoder (barge-in) without closing it.
    async reset() {
        if (this.codec === 'opus' && this.dec.state === 'configured') {
            this.dec.reset();
            this.dec.configure(OPUS_DEC);
        }
    }

    close() {
        if (this.dec && this.dec.state !== 'closed') this.dec.close();
    }
}
