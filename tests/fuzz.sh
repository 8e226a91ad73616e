#!/usr/bin/env bash
# Fuzzes the whole HTTP API from its own OpenAPI document with schemathesis:
# starts `attune serve` on a free port with a fresh data directory, gives it
# a little data (a rule, an event, a direct run, a secret), then generates
# requests for every operation with an admin token. Fails on any server
# error (5xx), any status code, content type or body the document does not
# describe. Bounded: a fixed number of examples per operation, deterministic.
#
#   tests/fuzz.sh [path/to/attune]        (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${CARGO_TARGET_DIR:-target}"
ATTUNE="${1:-$TARGET/debug/attune}"
SCHEMATHESIS_VERSION=4.32.5
VENV="$TARGET/fuzz-venv"
EXAMPLES="${ATTUNE_FUZZ_EXAMPLES:-25}"

if ! command -v curl >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
    else
        echo "install curl first" >&2
        exit 1
    fi
fi
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
"$ATTUNE" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" >"$DATA/serve.log" 2>&1 &
SERVER=$!
finish() {
    status=$?
    kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null
    # A failure is easier to read beside what the server said.
    [ "$status" = 0 ] || tail -n 40 "$DATA/serve.log" >&2
    rm -rf "$DATA"
}
trap finish EXIT

for _ in $(seq 1 300); do
    if [ -s "$DATA/admin.token" ] && curl -fsS "$BASE/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
TOKEN="$(cat "$DATA/admin.token")"
api() {
    curl -fsS -X "$1" "$BASE/api/v1$2" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' ${3:+--data "$3"} >/dev/null
}
api PUT /secrets/fuzz_secret '{"value": "fuzz-value"}'
api POST /rules '{"ref": "core.fuzz_echo", "trigger": "core.manual", "action": "core.echo", "action_params": {"message": "{{ event.payload.text }}"}}'
api POST /events '{"trigger": "core.manual", "payload": {"text": "seed"}}'
api POST /executions '{"action": "core.echo", "params": {"message": "direct"}}'

SCHEMATHESIS_HOOKS=fuzz_hooks PYTHONPATH=tests "$VENV/bin/schemathesis" run "$BASE/api/v1/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --generation-deterministic \
    --suppress-health-check all --request-timeout 30 \
    --no-color --output-truncate true --warnings off
