// The browser client (web/) in real headless Chromium against a real parleyd on loopback with
// the tiny golden models, a fake microphone playing espeak-ng speech, and no packages: Chromium
// is driven over the DevTools protocol on a pipe (tests/browser/cdp.mjs).
//
//   node tests/browser/run.mjs [--parleyd PATH] [--chromium PATH] [--keep]
//
// Two sessions, each in its own browser (the fake microphone starts its file per browser):
//   opus_hands_free   Opus through WebCodecs both ways, server VAD. The file holds two
//                     utterances; the second one starts while the first answer is playing,
//                     so the page's own VAD hears it and barges in (stops playback, sends
//                     response.cancel with the samples played).
//   pcm16_push_to_talk  PCM16 forced (?codec=pcm16), manual turns: the test holds Space (CDP
//                     key events) over the utterance, releases it (input.commit), and presses
//                     it again while the answer plays: a barge-in by keyboard.
// Each asserts from window.parleyStats and the DOM, and saves a screenshot under build/.
// Output: "ok NAME" / "FAIL NAME: why" per check; last line "N passed, N failed".
import {execFileSync, spawn} from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

import {Chromium} from './cdp.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const argOf = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : def;
};
const PARLEYD = path.resolve(ROOT, argOf('--parleyd', process.env.PARLEYD || 'build/parleyd'));
const CHROMIUM = argOf('--chromium', process.env.CHROMIUM || '/usr/bin/chromium');
const OUT = path.join(ROOT, 'build/browser-test');
const GOLDEN = path.join(ROOT, 'build/golden');
const ONLY = process.env.BROWSER_TEST_ONLY || ''; // 'vad' or 'ptt': one session only
const GAP_S = Number(process.env.BROWSER_TEST_GAP || 0.8);
const SEED = Number(process.env.BROWSER_TEST_SEED || 1);

let passed = 0, failed = 0;
function check(name, cond, why) {
    if (cond) {
        passed++;
        console.log(`ok   ${name}`);
    } else {
        failed++;
        console.log(`FAIL ${name}: ${why}`);
    }
    return cond;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

function tcpOpen(port) {
    return new Promise((resolve) => {
        const c = net.connect({ host: '127.0.0.1', port }, () => {
            c.destroy();
            resolve(true);
        });
        c.on('error', () => resolve(false));
    });
}

function get(port, p) {
    return new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: p, timeout: 2000 }, (res) => {
            let body = '';
            res.on('data', (d) => {
                body += d;
            });
            res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
        });
        req.on('error', () => resolve({ status: 0, body: '' }));
        req.on('timeout', () => req.destroy());
    });
}

// ---- the fake microphone ---------------------------------------------------------------------

// 48 kHz 16-bit mono WAV: silence, then each utterance followed by its pause (seconds).
function makeWav(name, parts) {
    const files = [];
    parts.forEach(([text, pause], i) => {
        const raw = path.join(OUT, `${name}-${i}-raw.wav`);
        const pad = path.join(OUT, `${name}-${i}.wav`);
        execFileSync('espeak-ng', ['-s', '150', '-w', raw, text]);
        execFileSync(
            'sox', [raw, '-r', '48000', '-b', '16', '-c', '1', pad, 'pad', '0', String(pause)]);
        files.push(pad);
    });
    const lead = path.join(OUT, `${name}-lead.wav`);
    execFileSync('sox', ['-n', '-r', '48000', '-b', '16', '-c', '1', lead, 'trim', '0', '1.0']);
    const out = path.join(OUT, `${name}.wav`);
    execFileSync('sox', [lead, ...files, out]);
    return out;
}

// ---- servers ----------------------------------------------------------------------------------

async function startParleyd() {
    const models =
        ['lm_tiny_f32.gguf', 'stok_a.gguf', 'voice_decoder.gguf'].map((f) => path.join(GOLDEN, f));
    for (const m of models)
        if (!fs.existsSync(m)) throw new Error(`missing ${m} (tests/golden/*.py make it)`);
    if (!fs.existsSync(PARLEYD)) throw new Error(`missing ${PARLEYD} (make)`);
    const port = await freePort();
    let wsPort = await freePort();
    if (wsPort === port) wsPort = port + 1;
    const conf = path.join(OUT, 'parleyd.conf');
    fs.writeFileSync(conf, [
        '[models]',
        `lm = ${models[0]}`,
        `tokenizer = ${models[1]}`,
        `decoder = ${models[2]}`,
        '[http]',
        `port = ${port}`,
        `web_root = ${path.join(ROOT, 'web')}`,
        '[websocket]',
        `port = ${wsPort}`,
        '[limits]',
        'max_sessions = 1', // so a second tab meets a full server
        '',
    ].join('\n'));
    let confText = fs.readFileSync(conf, 'utf8');
    const log = fs.openSync(path.join(OUT, 'parleyd.log'), 'w');
    // parleyd reads PARLEY_* variables as settings: none of the caller's may leak in.
    const env =
        Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PARLEY_')));
    const d = { port, wsPort, proc: null, exited: null };
    const launch = () => {
        const proc = spawn(PARLEYD, ['--config', conf], { stdio: ['ignore', log, log], env });
        d.proc = proc;
        d.exited = null;
        d.gone = new Promise((resolve) => proc.on('exit', (code) => {
            if (d.proc === proc) d.exited = code;
            resolve(code);
        }));
    };
    const ready = async () => {
        const end = Date.now() + 60000;
        while (Date.now() < end && d.exited === null) {
            if ((await get(port, '/readyz')).status === 200) return;
            await sleep(200);
        }
        d.proc.kill('SIGKILL');
        throw new Error(`parleyd not ready (exit ${d.exited}); see ${OUT}/parleyd.log`);
    };
    // SIGTERM (drain), then SIGKILL if it takes longer than 5 s.
    d.stop = async () => {
        d.proc.kill('SIGTERM');
        const t = setTimeout(() => d.proc.kill('SIGKILL'), 5000);
        await d.gone;
        clearTimeout(t);
    };
    d.restart = async () => {
        await d.stop();
        launch();
        await ready();
    };
    launch();
    await sleep(300);
    if (d.exited !== null) {
        // A parleyd without the web_root setting refuses the unknown key: run it without.
        confText = confText.replace(/^web_root = .*\n/m, '');
        fs.writeFileSync(conf, confText);
        launch();
    }
    await ready();
    return d;
}

const TYPES = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8'
};

// Until parleyd serves web/ itself: the same files from here, on loopback.
function serveWeb() {
    const root = path.join(ROOT, 'web');
    const srv = http.createServer((req, res) => {
        let p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
        if (p.endsWith('/')) p += 'index.html';
        const f = path.join(root, p);
        if (!f.startsWith(root + path.sep) || !fs.existsSync(f) || !fs.statSync(f).isFile()) {
            res.writeHead(404);
            res.end();
            return;
        }
        res.writeHead(
            200, { 'Content-Type': TYPES[path.extname(f)] || 'application/octet-stream' });
        res.end(fs.readFileSync(f));
    });
    return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

// ---- one browser session ----------------------------------------------------------------------

async function browser(wav, tag, fakeUi = true) {
    const prof = path.join(OUT, `profile-${tag}`);
    fs.rmSync(prof, { recursive: true, force: true });
    const log = fs.createWriteStream(path.join(OUT, `chromium-${tag}.log`));
    const flags = [
        '--headless',
        '--disable-gpu',
        '--no-first-run',
        '--no-default-browser-check',
        `--user-data-dir=${prof}`,
        '--use-fake-device-for-media-stream',
        `--use-file-for-fake-audio-capture=${wav}%noloop`,
        '--autoplay-policy=no-user-gesture-required',
        '--disable-background-timer-throttling',
        '--disable-renderer-backgrounding',
        // a name that is not localhost, for the page served over plain HTTP from elsewhere
        '--host-resolver-rules=MAP parley.test 127.0.0.1',
    ];
    if (fakeUi) flags.push('--use-fake-ui-for-media-stream'); // say yes to the microphone
    if (process.getuid && process.getuid() === 0) flags.push('--no-sandbox'); // root: no sandbox
    return new Chromium(CHROMIUM, flags, (l) => log.write(`${l}\n`));
}

const stats = (page) => page.eval('window.parleyStats');

async function finish(page, b, tag) {
    try {
        fs.writeFileSync(path.join(OUT, `screenshot-${tag}.png`), await page.screenshot());
    } catch (e) {
        console.log(`note: no screenshot (${e.message})`);
    }
    fs.writeFileSync(path.join(OUT, `console-${tag}.log`), page.console.join('\n') + '\n');
    const st = await page.eval('({ stats: window.parleyStats, messages: window.parleyLog })')
                   .catch(() => null);
    fs.writeFileSync(path.join(OUT, `stats-${tag}.json`), JSON.stringify(st, null, 1));
    await b.close();
}

async function commonChecks(page, tag, s) {
    check(`${tag}: user turn detected`, s.turnsDetected >= 1, `turnsDetected ${s.turnsDetected}`);
    check(
        `${tag}: answer text arrived`, s.transcriptChars > 0,
        `transcriptChars ${s.transcriptChars}`);
    check(
        `${tag}: audio frames received`, s.framesReceived > 0,
        `framesReceived ${s.framesReceived}`);
    check(`${tag}: audio played`, s.framesPlayed > 0, `framesPlayed ${s.framesPlayed}`);
    check(
        `${tag}: latency readout filled`, s.lastLatencyMs !== null && /\d+ ms/.test(s.latencyText),
        `lastLatencyMs ${s.lastLatencyMs}, text "${s.latencyText}"`);
    const dom = await page.eval(`(() => { const t = document.getElementById('transcript');
        return { user: [...t.querySelectorAll('li.user .text')].map((e) => e.textContent),
                 answers: [...t.querySelectorAll('li.answer .text')].map((e) => e.textContent),
                 notes: [...t.querySelectorAll('li.answer .note')].map((e) => e.textContent),
                 live: t.getAttribute('aria-live') }; })()`);
    check(
        `${tag}: both sides shown as text`,
        dom.user.some((u) => /^\(spoken, \d+ tokens, [\d.]+ s\)$/.test(u)) &&
            dom.answers.some((a) => a.length > 0 && a !== '…') && dom.live === 'polite',
        JSON.stringify(dom));
    return dom;
}

async function handsFree(base, wav) {
    const tag = 'opus_hands_free';
    const b = await browser(wav, tag);
    const page = await b.newPage();
    try {
        await page.open(`${base}&autostart=1&seed=${SEED}`);
        const up =
            await page.waitFor("window.parleyStats && window.parleyStats.state === 'ready'", 20000);
        check(`${tag}: connected`, up, JSON.stringify(await stats(page).catch(() => null)));
        if (!up) return;
        const s0 = await stats(page);
        check(`${tag}: Opus chosen by feature detection`, s0.codec === 'opus', `codec ${s0.codec}`);
        const done = await page.waitFor(
            `(() => { const s = window.parleyStats;
            return s.turnsDone >= 1 && s.framesPlayed > 0 && s.lastLatencyMs !== null
                && s.bargeIns >= 1 && !s.playing && s; })()`,
            90000, 250);
        const s = done || (await stats(page));
        const dom = await commonChecks(page, tag, s);
        check(
            `${tag}: barge-in by speech stopped playback and sent response.cancel`,
            s.bargeIns >= 1 && s.cancels >= 1 && dom.notes.some((n) => n.includes('interrupted')),
            `bargeIns ${s.bargeIns}, cancels ${s.cancels}, notes ${JSON.stringify(dom.notes)}`);
        check(`${tag}: no error shown`, !s.lastError, s.lastError);
        console.log(
            `note: ${tag}: sent ${s.framesSent}, received ${s.framesReceived}, played ` +
            `${s.framesPlayed} frames, underruns ${s.underruns}, latency ${s.lastLatencyMs} ms ` +
            `(server commit -> first audio ${s.lastServerFirstAudioMs} ms)`);
        await errorPages(b, base, tag, wav);
        await page.eval('window.parleyTest.stop()'); // frees the only session for the next browser
    } finally {
        await finish(page, b, tag);
    }
}

// The error messages a person sees, each in its own tab of the same browser (while the
// hands-free tab holds the server's only session).
async function errorPages(b, base, tag, wavPath) {
    const shown = async (url, expect, name) => {
        const p = await b.newPage();
        await p.open(url);
        const text = await p.waitFor('window.parleyStats && window.parleyStats.lastError', 10000);
        const box =
            await p.eval("(e => e.hidden ? '' : e.textContent)(document.getElementById('error'))")
                .catch(() => '');
        check(
            `${tag}: error shown: ${name}`, text && expect.test(text) && box === text,
            `"${text}", box "${box}"`);
        await p.eval('window.parleyTest.stop()').catch(() => {});
        await p.close();
    };
    await shown(`${base}&autostart=1`, /server is full/i, 'server full (1013)');
    const closed = await freePort();
    const u = new URL(base);
    u.searchParams.set('ws', `ws://127.0.0.1:${closed}/v1/chat`);
    await shown(`${u}&autostart=1`, /(Cannot reach|refused us)/, 'server unreachable');
    const insecure = new URL(base);
    insecure.hostname = 'parley.test';
    await shown(`${insecure}`, /secure page.*HTTPS/, 'not HTTPS off localhost');
    // A browser that asks the person (no fake UI) and is told no.
    const nb = await browser(wavPath, `${tag}-denied`, false);
    try {
        await nb.send(
            'Browser.setPermission',
            { permission: { name: 'microphone' }, setting: 'denied', origin: u.origin });
        b = nb;
        await shown(
            `${base}&autostart=1`, /permission was refused/, 'microphone permission refused');
    } finally {
        await nb.close();
    }
}

async function typeQuestion(page, text) {
    await page.waitFor('!window.parleyStats.playing', 10000);
    await page.eval("document.getElementById('text-in').focus()");
    await page.send('Input.insertText', { text });
    const enter = { key: 'Enter', code: 'Enter', windowsVirtualKeyCode: 13, text: '\r' };
    await page.send('Input.dispatchKeyEvent', { type: 'keyDown', ...enter });
    await page.send('Input.dispatchKeyEvent', { type: 'keyUp', ...enter });
    await page.eval('document.activeElement.blur()'); // Space is the talk key again
}

async function key(page, type) {
    await page.send(
        'Input.dispatchKeyEvent',
        { type, code: 'Space', key: ' ', windowsVirtualKeyCode: 32, nativeVirtualKeyCode: 32 });
}

async function pushToTalk(base, wav, speechEndS, d) {
    const tag = 'pcm16_push_to_talk';
    const b = await browser(wav, tag);
    const page = await b.newPage();
    try {
        await page.open(`${base}&autostart=1&codec=pcm16&mode=ptt&seed=${SEED}`);
        const up =
            await page.waitFor("window.parleyStats && window.parleyStats.state === 'ready'", 20000);
        check(`${tag}: connected`, up, JSON.stringify(await stats(page).catch(() => null)));
        if (!up) return;
        const t0 = Date.now();
        await key(page, 'keyDown');
        check(
            `${tag}: Space pressed the talk button`,
            await page.waitFor(
                "document.getElementById('talk').getAttribute('aria-pressed') === 'true'", 2000),
            'aria-pressed not true');
        // Hold over the utterance (the fake microphone started with the capture), then let go.
        await sleep(Math.max(0, speechEndS * 1000 + 300 - (Date.now() - t0)));
        await key(page, 'keyUp');
        // Talk over an answer while it plays. The tiny model's answers hold 0.08-2 s of audio:
        // when one is over before it is caught, ask again by typing (the text box and Enter).
        let playing = null;
        for (let attempt = 0; attempt < 4 && !playing; attempt++) {
            if (attempt > 0) await typeQuestion(page, 'Tell me more about that, please.');
            playing = await page.waitFor(
                'window.parleyStats.playing && window.parleyStats.answerPlayedMs >= 40', 30000, 20);
        }
        if (playing) {
            await key(page, 'keyDown'); // talking over the answer: barge-in
            await sleep(300);
            await key(page, 'keyUp');
        }
        const done = await page.waitFor(
            `(() => { const s = window.parleyStats;
            return s.turnsDone >= 1 && s.lastLatencyMs !== null && !s.playing && s; })()`,
            60000, 250);
        const s = done || (await stats(page));
        const dom = await commonChecks(page, tag, s);
        check(`${tag}: PCM16 forced`, s.codec === 'pcm16', `codec ${s.codec}`);
        check(
            `${tag}: barge-in by the talk key stopped playback and sent response.cancel`,
            playing && s.bargeIns >= 1 && s.cancels >= 1 &&
                dom.notes.some((n) => n.includes('interrupted')),
            `answer playing ${!!playing}, bargeIns ${s.bargeIns}, cancels ${s.cancels}`);
        console.log(
            `note: ${tag}: sent ${s.framesSent}, received ${s.framesReceived}, played ` +
            `${s.framesPlayed} frames, underruns ${s.underruns}, latency ${s.lastLatencyMs} ms`);
        // parleyd restarts under the page: it says so, then reconnects by itself.
        await d.restart();
        const lost = await page.waitFor(
            "window.parleyStats.state !== 'ready' && window.parleyStats.lastError", 10000);
        const back = await page.waitFor(
            "window.parleyStats.state === 'ready' && document.getElementById('error').hidden",
            20000);
        check(
            `${tag}: reconnects after a server restart`, lost && back,
            `lost: "${lost}", then ${JSON.stringify(await stats(page))}`);
    } finally {
        await finish(page, b, tag);
    }
}

function duration(wav) {
    return Number(execFileSync('soxi', ['-D', wav]).toString().trim());
}

async function main() {
    fs.mkdirSync(OUT, { recursive: true });
    if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}`);
    // Short utterances 0.8 s apart: the server ends a turn after 0.6 s of silence and answers
    // within ~0.3 s, so the next utterance starts while that answer plays. The tiny model's
    // answers are short and vary (0.1-2 s of audio), hence several chances.
    const wavVad = makeWav('mic-vad', [
        ['Hello there. What is the weather like today?', GAP_S],
        ['Wait. Tell me a story instead.', GAP_S], ['No, sing me a song please.', GAP_S],
        ['Or tell me a joke about cats.', GAP_S], ['Thank you, that is all.', 20]
    ]);
    const wavPtt = makeWav('mic-ptt', [['Good morning. How are you doing?', 30]]);
    const pttSpeechEnd = 1.0 + duration(path.join(OUT, 'mic-ptt-0-raw.wav'));
    const d = await startParleyd();
    let web = null;
    try {
        if (!(await tcpOpen(d.wsPort)))
            throw new Error(`parleyd (${PARLEYD}) has no WebSocket server on its [websocket] port`);
        let base;
        const page = await get(d.port, '/');
        if (page.status === 200 && page.body.includes('parley')) {
            check(
                'parleyd serves the client at /', /^text\/html/.test(page.headers['content-type']),
                `content-type ${page.headers['content-type']}`);
            const js = await get(d.port, '/app.js');
            check(
                'parleyd serves its assets',
                js.status === 200 && /javascript/.test(js.headers['content-type']),
                `app.js: ${js.status} ${js.headers['content-type']}`);
            check(
                'parleyd refuses traversal', (await get(d.port, '/%2e%2e/Makefile')).status === 404,
                'not 404');
            base = `http://127.0.0.1:${d.port}/?x=1`; // the page asks /v1/server for the WebSocket
        } else {
            console.log(`note: parleyd does not serve web/ (GET / -> ${
                page.status}): served from the test`);
            web = await serveWeb();
            base = `http://127.0.0.1:${web.address().port}/index.html?ws=ws://127.0.0.1:${
                d.wsPort}/v1/chat`;
        }
        if (ONLY !== 'ptt') await handsFree(base, wavVad);
        if (ONLY !== 'vad') await pushToTalk(base, wavPtt, pttSpeechEnd, d);
    } finally {
        web?.close();
        await d.stop();
    }
}

try {
    await main();
} catch (e) {
    check('browser test setup', false, e.message);
}
console.log(`screenshots and logs: ${path.relative(ROOT, OUT)}/`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
