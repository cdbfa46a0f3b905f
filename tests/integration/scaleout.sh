#!/bin/sh
# Scale-out on loopback: two parleyd (the tiny golden models) behind Debian's HAProxy,
# configured from deploy/haproxy.cfg with loopback ports substituted for its addresses.
#   1. both daemons join the pool (health checks on /readyz);
#   2. spoken-QA requests through the balancer are answered and spread over both daemons
#      (each daemon's /metrics counts its turns); a streamed answer (SSE) comes through;
#      GET /v1/server and a WebSocket session (`parley talk`) go through the balancer;
#   3. SIGTERM to one daemon while it holds a conversation: it drains (its /readyz stops
#      answering 200, HAProxy marks it DOWN) while requests through the balancer keep being
#      answered by the other; the drained daemon exits 0 once its conversation ends.
# Prints "ok"/"FAIL" per check and closes with "N passed, N failed"; exits non-zero on failure.
#
#   tests/integration/scaleout.sh            (BUILD=build by default: build/parleyd, build/parley)
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
PARLEYD=$BUILD/parleyd
PARLEY=$BUILD/parley
PYTHON=${PYTHON:-/usr/bin/python3}
GOLDEN=build/golden
LM=$GOLDEN/lm_tiny_f32.gguf
TOK=$GOLDEN/stok_a.gguf
DEC=$GOLDEN/voice_decoder.gguf

passed=0
failed=0
pids=""
TMP=$(mktemp -d /tmp/parley-scaleout.XXXXXX)

check() {
    name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
    fi
}

finish() {
    for p in $pids; do
        kill "$p" 2>/dev/null
    done
    for p in $pids; do
        wait "$p" 2>/dev/null
    done
    if [ "$failed" -ne 0 ]; then
        for f in "$TMP"/*.log; do
            [ -e "$f" ] || continue
            echo "---- $f"
            tail -n 30 "$f"
        done
    fi
    rm -rf "$TMP"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

fatal() {
    echo "FAIL $1"
    failed=$((failed + 1))
    finish
}

for tool in haproxy curl; do
    command -v $tool >/dev/null 2>&1 || fatal "$tool is not installed (deploy/install-deps.sh)"
done
[ -x "$PARLEYD" ] || fatal "$PARLEYD is not built (make)"
for f in $LM $TOK $DEC; do
    [ -r "$f" ] || fatal "$f missing (for g in lm stok voice; do $PYTHON tests/golden/\${g}_torch.py build/golden; done)"
done

# six free loopback ports: two daemons x (HTTP, WebSocket), the balancer, its stats
set -- $($PYTHON -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
HA=$1 WA=$2 HB=$3 WB=$4 FRONT=$5 STATS=$6

# ---- the daemons ----------------------------------------------------------------------------

start_daemon() { # name http_port ws_port; sets pid (a child of this shell, so it can be waited)
    "$PARLEYD" --models-lm=$LM --models-tokenizer=$TOK --models-decoder=$DEC \
        --http-address=127.0.0.1 --http-port="$2" --websocket-address=127.0.0.1 \
        --websocket-port="$3" --process-drain-timeout=30 --limits-max-sessions=8 \
        >"$TMP/$1.log" 2>&1 &
    pid=$!
}

status_of() { # url -> HTTP status (000 when nothing answers)
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1"
}

wait_for() { # seconds command...: 0 once the command succeeds
    end=$(($(date +%s) + $1))
    shift
    while [ "$(date +%s)" -le "$end" ]; do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

ready() { [ "$(status_of "http://127.0.0.1:$1/readyz")" = 200 ]; }

start_daemon a "$HA" "$WA"
PA=$pid
start_daemon b "$HB" "$WB"
PB=$pid
pids="$PA $PB"
check "daemon a ready" wait_for 30 ready "$HA"
check "daemon b ready" wait_for 30 ready "$HB"

# ---- the balancer, from deploy/haproxy.cfg -------------------------------------------------

sed -e "s/bind \*:80\$/bind 127.0.0.1:$FRONT/" \
    -e "s/10\.0\.0\.11:8080/127.0.0.1:$HA/" -e "s/10\.0\.0\.12:8080/127.0.0.1:$HB/" \
    -e "s/10\.0\.0\.11:8081 check port 8080/127.0.0.1:$WA check port $HA/" \
    -e "s/10\.0\.0\.12:8081 check port 8080/127.0.0.1:$WB check port $HB/" \
    -e "s/bind 127\.0\.0\.1:8404/bind 127.0.0.1:$STATS/" \
    deploy/haproxy.cfg >"$TMP/haproxy.cfg"
substituted() {
    ! grep -v '^ *#' "$TMP/haproxy.cfg" | grep -q '10\.0\.0\.\|:80$\|:8404\|port 8080'
}
check "haproxy.cfg addresses substituted" substituted
check "haproxy -c accepts the config" haproxy -c -q -f "$TMP/haproxy.cfg"
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAPID=$!
pids="$pids $HAPID"

server_status() { # backend server -> HAProxy's status column ("UP", "DOWN", "UP 1/2", ...)
    curl -s --max-time 5 "http://127.0.0.1:$STATS/stats;csv" |
        awk -F, -v b="$1" -v s="$2" '$1 == b && $2 == s { print $18 }'
}
is_status() { [ "$(server_status "$1" "$2")" = "$3" ]; }
all_up() {
    is_status parley_http parley1 UP && is_status parley_http parley2 UP &&
        is_status parley_ws parley1 UP && is_status parley_ws parley2 UP
}
check "both daemons in both pools (UP)" wait_for 20 all_up

# ---- REST through the balancer, spread over both ---------------------------------------------

turns() { # http port -> turns the daemon has finished
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk '/^parley_turns_total\{/ { s += $2 } END { print s + 0 }'
}

ask() { # -> 0 when the balancer answers a spoken-QA text question with an answer
    out=$(curl -s --max-time 30 -H 'Content-Type: application/json' \
        -d '{"text": "How far is the moon?", "max_new_tokens": 30}' \
        "http://127.0.0.1:$FRONT/v1/spoken-qa")
    case "$out" in *'"finish_reason"'*) return 0 ;; esac
    echo "  answer: $out" | cut -c1-300
    return 1
}

ask_n() { # n -> 0 when all n are answered
    i=0
    while [ "$i" -lt "$1" ]; do
        ask || return 1
        i=$((i + 1))
    done
}

a0=$(turns "$HA")
b0=$(turns "$HB")
check "6 spoken-QA requests through the balancer answered" ask_n 6
a1=$(turns "$HA")
b1=$(turns "$HB")
echo "     turns: daemon a +$((a1 - a0)), daemon b +$((b1 - b0))"
check "requests spread over both daemons" [ $((a1 - a0)) -ge 1 -a $((b1 - b0)) -ge 1 ]
check "all 6 counted by the daemons" [ $((a1 - a0 + b1 - b0)) -eq 6 ]

sse() {
    curl -s -N --max-time 30 -H 'Content-Type: application/json' \
        -d '{"text": "Say something.", "max_new_tokens": 40, "stream": true}' \
        "http://127.0.0.1:$FRONT/v1/spoken-qa" >"$TMP/sse.txt"
    grep -q '^event: start' "$TMP/sse.txt" && grep -q '^event: transcript' "$TMP/sse.txt" &&
        grep -q '^event: done' "$TMP/sse.txt"
}
check "a streamed answer (SSE) through the balancer" sse
server_json() {
    curl -s --max-time 5 "http://127.0.0.1:$FRONT/v1/server" | grep -q '"websocket_url"'
}
check "GET /v1/server through the balancer" server_json

# ---- WebSocket through the balancer ----------------------------------------------------------

HAVE_TALK=0
if [ -x "$PARLEY" ] && "$PARLEY" talk --help 2>&1 | grep -q -- '--url'; then
    HAVE_TALK=1
fi
if [ "$HAVE_TALK" = 1 ]; then
    talk() {
        "$PARLEY" talk --url "ws://127.0.0.1:$FRONT/v1/chat" --text "Hello there" --max-new 40 \
            --out "$TMP/talk.wav" >"$TMP/talk.log" 2>&1
    }
    a0=$(turns "$HA")
    b0=$(turns "$HB")
    check "WebSocket sessions through the balancer (parley talk)" talk
    check "a second WebSocket session" talk
    a1=$(turns "$HA")
    b1=$(turns "$HB")
    check "both WebSocket turns reached a daemon" [ $((a1 - a0 + b1 - b0)) -eq 2 ]
else
    echo "     (no \`parley talk\`: WebSocket through the balancer not checked)"
fi

# ---- drain one daemon ------------------------------------------------------------------------

sessions() { # http port -> parley_sessions_active
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk '/^parley_sessions_active / { print $2 }'
}
HOLD=""
if [ "$HAVE_TALK" = 1 ] && command -v espeak-ng >/dev/null 2>&1 &&
    espeak-ng -w "$TMP/long.wav" "This question takes several seconds to say, so that the \
conversation is still open while the daemon drains. Please answer it briefly." 2>/dev/null; then
    # a conversation on daemon a itself, spoken at real-time pace: a drains around it
    "$PARLEY" talk --url "ws://127.0.0.1:$WA/v1/chat" --audio "$TMP/long.wav" --realtime \
        --max-new 20 --out "$TMP/hold.wav" >"$TMP/hold.log" 2>&1 &
    HOLD=$!
    pids="$pids $HOLD"
    has_session() { [ "$(sessions "$HA")" = 1 ]; }
    check "daemon a holds a conversation" wait_for 10 has_session
fi

kill -TERM "$PA"
# at once, before any health check noticed: refused connections are retried on daemon b
b0=$(turns "$HB")
check "4 requests through the balancer during the drain answered" ask_n 4
not_ready() { [ "$(status_of "http://127.0.0.1:$HA/readyz")" != 200 ]; }
check "draining daemon a: /readyz no longer 200" wait_for 5 not_ready
a_down() { is_status parley_http parley1 DOWN && is_status parley_ws parley1 DOWN; }
check "HAProxy marks daemon a DOWN (both pools)" wait_for 15 a_down
check "daemon b stays UP" is_status parley_http parley2 UP
check "2 more requests answered with daemon a out of the pool" ask_n 2
b1=$(turns "$HB")
check "... all 6 by daemon b" [ $((b1 - b0)) -eq 6 ]

exit_status() { # pid seconds -> rc: the exit status, or 255 after the deadline (not in a
    # subshell: only this shell can wait for its children)
    end=$(($(date +%s) + $2))
    while kill -0 "$1" 2>/dev/null; do
        if [ "$(date +%s)" -gt "$end" ]; then
            rc=255
            return
        fi
        sleep 0.2
    done
    wait "$1"
    rc=$?
}
exit_status "$PA" 40
check "daemon a exits 0 after draining (got $rc)" [ "$rc" = 0 ]
pids=$(echo "$pids" | sed "s/\\b$PA\\b//")
if [ -n "$HOLD" ]; then
    check "daemon a's log: drained 1 session" grep -q 'draining 1 session' "$TMP/a.log"
    exit_status "$HOLD" 20
    pids=$(echo "$pids" | sed "s/\\b$HOLD\\b//")
    check "the conversation on daemon a was told (session.ending)" \
        grep -q 'shutting down' "$TMP/hold.log"
fi

kill -TERM "$PB"
exit_status "$PB" 30
check "daemon b exits 0 on SIGTERM (got $rc)" [ "$rc" = 0 ]
pids=$(echo "$pids" | sed "s/\\b$PB\\b//")
finish
