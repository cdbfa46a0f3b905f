/*
 * spoken_qa — POST /v1/spoken-qa: one question, one answer, on a fresh engine session that
 * lives only for the request (admitted through service_admit like a WebSocket session).
 *
 * The question: an audio body (Content-Type audio/wav, audio/x-wav, audio/wave, audio/ogg,
 * audio/opus; decoded with proto/audio wav / oggopus, channels averaged to mono), or JSON
 * (application/json) {"text": "..."} or {"audio": "<base64 WAV or Ogg Opus, or a data: URL>"}
 * with options. Options (JSON fields, or query parameters for any body; JSON wins):
 *   temperature (0..2), top_p (0..1], top_k (0..100000, 0 off), max_new_tokens (1..context),
 *   seed (0..2^53), greedy (bool), format ("wav" | "ogg": the audio inside a JSON answer),
 *   system_prompt ("auto": the prompt of the question's kind, as the demo; "audio" | "text":
 *   that one whatever the question), stream (bool).
 *
 * The answer, by Accept (first listed type that is served) and stream:
 *   JSON (default, application/json, * / *): id, question ("audio" | "text"), user_tokens
 *     (speech tokens of a spoken question; for a text question the ids its turn prefilled),
 *     text, finish_reason, audio {format, sample_rate, samples, duration_ms, data: base64 WAV
 *     PCM16 at the vocoder's rate or Ogg Opus} (null without audio), timings (ms from the
 *     commit), usage.
 *   audio/wav | audio/x-wav | audio/ogg: the audio itself; text and figures in headers
 *     (X-Parley-Text percent-encoded UTF-8, X-Parley-Session, X-Parley-Finish-Reason,
 *     X-Parley-Usage, X-Parley-Audio, Server-Timing).
 *   ?stream=true, "stream": true or Accept: text/event-stream: Server-Sent Events, written as
 *     the engine produces them: start, user (spoken questions), transcript {text: delta},
 *     audio {offset, samples, data: base64 PCM16 little-endian mono at sample_rate}, error,
 *     done (the JSON answer without the audio data); ": keep-alive" comments while idle.
 * Errors are JSON errors (proto/http): 400 invalid_json / invalid_value / bad_audio (the
 * decoder's message) / empty_turn / turn_too_long / context, 406 not_acceptable, 415
 * unsupported_media, 500 internal, 503 server_full / shutting_down (+ Retry-After).
 *
 * Threads: spoken_qa_serve runs on the HTTP connection's own thread and blocks for the turn,
 * polling the engine's events and whether the client is still there (a client that leaves
 * cancels the answer and frees the session); a streamed answer's reads run on that thread too.
 */
#ifndef PARLEY_SPOKEN_QA_H
#define PARLEY_SPOKEN_QA_H

#include "http/http.h"
#include "service.h"

/* The hooks.spoken_qa of proto/http; user is the struct service. */
void spoken_qa_serve(void *service, const struct http_call *call, struct http_response *res);

/* Reads a request as spoken_qa_serve does (content type, JSON, options, base64, the audio
 * decoders, Accept) without running a turn: 0 when it would be answered, else the HTTP status
 * of its error, with the message in msg. Only svc's lm_ctx, have_stok and voice_rate are read.
 * For the fuzz target. */
int spoken_qa_check(const struct service *svc, const struct http_call *call, char *msg, size_t len);

#endif
