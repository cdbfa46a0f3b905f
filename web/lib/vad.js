// vad — a small energy detector on the microphone, used for barge-in (the server's VAD ends
// turns; this one only has to notice "the person is talking now" while an answer plays).
// Speech starts after `onsetMs` of blocks above `thresholdDb`; it stops after `hangMs` below.
export class EnergyVad {
    constructor({ thresholdDb = -42, onsetMs = 100, hangMs = 400 } = {}) {
        this.thresholdDb = thresholdDb;
        this.onsetMs = onsetMs;
        this.hangMs = hangMs;
        this.above = 0; // ms of consecutive loud audio
        this.below = 0; // ms of consecutive quiet audio
        this.speaking = false;
    }

    // One block: its level in dBFS and its length in ms. Returns "start", "stop" or null.
    update(db, ms) {
        if (db >= this.thresholdDb) {
            this.above += ms;
            this.below = 0;
            if (!this.speaking && this.above >= this.onsetMs) {
                this.speaking = true;
                return 'start';
            }
        } else {
            this.below += ms;
            this.above = 0;
            if (this.speaking && this.below >= this.hangMs) {
                this.speaking = false;
                return 'stop';
            }
        }
        return null;
    }
}
