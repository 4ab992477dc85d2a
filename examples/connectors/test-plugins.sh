#!/usr/bin/env bash
# Tests the two example plugins standalone, without the engine: pipe protocol lines into
# each one and check what comes back (every line must be a JSON object, and the last one the
# expected final message). Needs bash and python3 (for json.loads). Exit 0 when all pass.
#
#   examples/connectors/test-plugins.sh
set -u
shopt -s lastpipe # `... | check` runs check in this shell, so its counts add up
here=$(cd "$(dirname "$0")" && pwd)
NOTES=$here/python/engine-connector-notes
SYSINFO=$here/bash/engine-connector-sysinfo
HELLO='{"type":"hello","protocol":1,"engine":"0.1.0"}'
ACK='{"type":"ack"}'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0 failed=0

# check NAME EXPR: stdin = plugin output; every line must parse as a
# JSON object, the first must be hello, and the Python expression EXPR over `lines` (the
# parsed messages) and `last` (the final one) must hold.
check() {
  local name=$1 expr=$2 out
  if out=$(python3 -c '
import json, sys
lines = []
for n, raw in enumerate(sys.stdin.read().splitlines(), 1):
    try:
        m = json.loads(raw)
    except ValueError as e:
        sys.exit("line %d is not JSON: %r (%s)" % (n, raw, e))
    if not isinstance(m, dict):
        sys.exit("line %d is not an object: %r" % (n, raw))
    lines.append(m)
last = lines[-1] if lines else None
if not lines or lines[0].get("type") != "hello":
    sys.exit("the first line is not hello: %r" % lines[:1])
if not eval("(" + sys.argv[1] + ")"):
    sys.exit("expectation failed: %s\n got: %s" % (sys.argv[1], json.dumps(lines)))
' "$expr" 2>&1); then
    pass=$((pass + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name: $out"
  fi
}

# expect NAME COMMAND...: COMMAND must succeed.
expect() {
  local name=$1
  shift
  if "$@"; then
    pass=$((pass + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
  fi
}

ctx() { # ctx KEY [SETTINGS]
  printf '{"run_id":"r1","step":"w","index":0,"attempt":1,"idempotency_key":"%s","settings":%s,"workflow_dir":"%s","added_later":1}' "$1" "${2:-{\}}" "$work"
}

# --- notes (Python) -----------------------------------------------------------------------

printf '%s\n' "$HELLO" '{"type":"describe"}' | "$NOTES" |
  check "notes describe" 'last["type"] == "describe" and [a["name"] for a in last["actions"]] == ["write", "read"] and last["actions"][0]["resource"] == "notes.file"'

write='{"type":"invoke","action":"write","input":{"dir":"d","name":"a.txt","text":"hi"},"context":'$(ctx r1/w/0 '{"prefix":"P:"}')',"unknown":true}'
printf '%s\n' "$HELLO" "$write" "$ACK" '{"type":"from-the-future"}' "$ACK" | "$NOTES" |
  check "notes write (intent, ack, create, confirm, result)" '
[m["type"] for m in lines] == ["hello","progress","progress","resource","progress","log","progress","resource","progress","result"]
and lines[3]["id"] is None and lines[3]["key"] == "r1/w/0" and lines[3]["undo"]["path"].endswith("/d/a.txt")
and lines[7]["id"] == lines[3]["undo"]["path"] and last["output"]["bytes"] == 4'
expect "notes write: the file holds prefix + text" test "$(cat "$work/d/a.txt")" = "P:hi"

printf '%s\n' "$HELLO" "$write" "$ACK" "$ACK" | "$NOTES" |
  check "notes write again adopts the same file" 'last["type"] == "result" and any("adopted" in m.get("line", "") for m in lines)'

printf '%s\n' "$HELLO" "${write/\"hi\"/\"other\"}" "$ACK" "$ACK" | "$NOTES" |
  check "notes write over a different file is a conflict, before any record" 'last["kind"] == "conflict" and not any(m["type"] == "resource" for m in lines)'

printf '%s\n' "$HELLO" "${write/a.txt/b.txt}" | "$NOTES" |
  check "notes write without an ack creates nothing" 'last["type"] == "error" and last["kind"] == "transient"'
expect "notes write without an ack: no file" test ! -e "$work/d/b.txt"

printf '%s\n' "$HELLO" '{"type":"invoke","action":"read","input":{"path":"d/a.txt"},"context":'"$(ctx r1/r)"'}' | "$NOTES" |
  check "notes read" 'last == {"type": "result", "output": {"text": "P:hi"}}'
printf '%s\n' "$HELLO" '{"type":"invoke","action":"read","input":{"path":"d/none"},"context":'"$(ctx r1/r)"'}' | "$NOTES" |
  check "notes read of a missing file is not_found" 'last["type"] == "error" and last["kind"] == "not_found"'
printf '%s\n' "$HELLO" '{"type":"invoke","action":"write","input":{"dir":"d","name":"..","x":1},"context":'"$(ctx k)"'}' | "$NOTES" |
  check "notes write with an unknown field is invalid" 'last["kind"] == "invalid"'

rec='{"kind":"notes.file","key":"r1/w/0","id":null,"state":"intended","undo":{"path":"'$work'/d/a.txt"},"step":{"step":"w","index":0}}'
printf '%s\n' "$HELLO" '{"type":"undo","action":"write","resource":'"$rec"',"context":'"$(ctx r1/w/0)"'}' | "$NOTES" |
  check "notes undo deletes the file" 'last == {"type": "done"}'
expect "notes undo: the file is gone" test ! -e "$work/d/a.txt"
printf '%s\n' "$HELLO" '{"type":"undo","action":"write","resource":'"$rec"',"context":'"$(ctx r1/w/0)"'}' | "$NOTES" |
  check "notes undo of a file already gone is done" 'last == {"type": "done"}'

printf '%s\n' '{"type":"hello","protocol":2}' '{"type":"describe"}' | "$NOTES" |
  check "notes refuses protocol 2" 'last["type"] == "error" and last["kind"] == "invalid" and "2" in last["message"]'

# Test-only misbehaviours (NOTES_MISBEHAVE).
out=$(printf '%s\n' "$HELLO" "$write" | NOTES_MISBEHAVE=bad_json "$NOTES")
expect "misbehave bad_json: hello, then a line that is not JSON" test "$(printf '%s\n' "$out" | sed -n 2p)" = "this is not JSON {"
printf '%s\n' "$HELLO" "$write" | NOTES_MISBEHAVE=exit_early "$NOTES" >/dev/null 2>"$work/err"
rc=$?
expect "misbehave exit_early: exit 3 with a line on stderr (rc=$rc: $(cat "$work/err"))" test "$rc" = 3 -a -s "$work/err"
printf '%s\n' "$HELLO" "$write" | NOTES_MISBEHAVE=hang timeout 2 "$NOTES" >/dev/null
rc=$?
expect "misbehave hang: still running after 2 s (rc=$rc)" test "$rc" = 124
printf '%s\n' "$HELLO" "${write/a.txt/c.txt}" "$ACK" "$ACK" | NOTES_MISBEHAVE=bad_protocol "$NOTES" |
  check "misbehave bad_protocol" 'lines[0]["protocol"] == 99'
printf '%s\n' "$HELLO" "$write" | NOTES_MISBEHAVE=bad_output "$NOTES" |
  check "misbehave bad_output" 'last == {"type": "result", "output": {"path": 42}}'
printf '%s\n' "$HELLO" '{"type":"describe"}' | NOTES_MISBEHAVE=bad_json "$NOTES" |
  check "misbehaviours leave describe alone by default" 'last["type"] == "describe"'
printf '%s\n' "$HELLO" '{"type":"describe"}' | NOTES_MISBEHAVE=bad_output NOTES_MISBEHAVE_ON=describe "$NOTES" |
  check "NOTES_MISBEHAVE_ON=describe" 'last["actions"][0]["input_schema"] == {"type": 12}'

# --- sysinfo (Bash) -----------------------------------------------------------------------

printf '%s\n' "$HELLO" '{"type":"describe"}' | "$SYSINFO" |
  check "sysinfo describe" '[a["name"] for a in last["actions"]] == ["disk", "uptime"]'
printf '%s\n' "$HELLO" '{"context":{"settings":{"type":"x","input":{"path":"/no"}}},"type":"invoke","action":"disk","input":{"path":"/"}}' | "$SYSINFO" |
  check "sysinfo disk /" 'last["type"] == "result" and last["output"]["path"] == "/" and last["output"]["total_kb"] > 0 and last["output"]["used_kb"] + last["output"]["available_kb"] <= last["output"]["total_kb"]'
printf '%s\n' "$HELLO" '{"type":"invoke","action":"disk","input":{},"context":{}}' | "$SYSINFO" |
  check "sysinfo disk defaults to /" 'last["output"]["path"] == "/"'
printf '%s\n' "$HELLO" '{"type":"invoke","action":"disk","input":{"path":"/no/such/dir"},"context":{}}' | "$SYSINFO" |
  check "sysinfo disk of a missing path is not_found" 'last["kind"] == "not_found"'
printf '%s\n' "$HELLO" '{"type":"invoke","action":"disk","input":{"path":1},"context":{}}' | "$SYSINFO" |
  check "sysinfo disk with a number is invalid" 'last["kind"] == "invalid"'
printf '%s\n' "$HELLO" '{"type":"invoke","action":"uptime","input":{},"context":{}}' | "$SYSINFO" |
  check "sysinfo uptime" 'last["type"] == "result" and last["output"]["seconds"] > 0'
printf '%s\n' "$HELLO" '{"type":"undo","action":"disk","resource":{"kind":"x","key":"k","id":null},"context":{}}' | "$SYSINFO" |
  check "sysinfo undo is done" 'last == {"type": "done"}'
printf '%s\n' '{"type":"hello","protocol":7}' '{"type":"describe"}' | "$SYSINFO" |
  check "sysinfo refuses protocol 7" 'last["kind"] == "invalid" and "7" in last["message"]'
# Escaping: a path with a quote, a backslash, a tab, a newline, control bytes and UTF-8,
# sent with \u escapes (a surrogate pair included) and expected back byte for byte.
weird=$(python3 -c 'import os,sys; p=os.path.join(sys.argv[1], "q\"b\\t\tn\nc\x01\x1f\x7f é 😀 % &"); os.mkdir(p); print(p, end="")' "$work")
req=$(python3 -c 'import json,sys; print(json.dumps({"type":"invoke","action":"disk","input":{"path":sys.argv[1]},"context":{}}))' "$weird")
printf '%s\n' "$HELLO" "$req" | "$SYSINFO" |
  WEIRD=$weird check "sysinfo escapes strings both ways" '__import__("os").environ["WEIRD"] == last["output"]["path"]'

echo "$pass passed, $failed failed"
((failed == 0))
