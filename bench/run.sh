#!/usr/bin/env bash
# Engine benchmarks, beside the OS floor. Prints a table; quote ratios, not
# absolute times (machines are shared and noisy).
#   bench/run.sh            # RUNS=5 by default
# Workloads:
#   W1  500 independent shell.run steps of `true`, concurrency 16
#       floor: seq 500 | xargs -P16 -n1 sh -c true
#   W2  1 -> 100 -> 100 fan-out chain passing outputs, concurrency 16
#       floor: the same with xargs (seq | xargs echo | xargs echo c-)
#   V   engine validate of a generated 10,000-step workflow (aim: < 0.5 s, < 100 MB)
# W1 runs twice: with the durable state file (the default) and with `--state :memory:`,
# whose difference is what durability costs; then the store's own writes/second.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
cargo build --release -p engine --locked -q
ENGINE=$PWD/target/release/engine
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT

cat > "$gen/w1.yaml" <<'Y'
version: 1
name: bench-w1
concurrency: 16
steps:
  wide:
    uses: shell.run
    for_each: ${{ range(500) }}
    with: { command: "true" }
Y
cat > "$gen/w2.yaml" <<'Y'
version: 1
name: bench-w2
concurrency: 16
steps:
  a:
    uses: shell.run
    with: { command: "seq 0 99" }
  b:
    uses: shell.run
    for_each: ${{ steps.a.outputs.stdout | trim | split }}
    with: { command: "echo ${{ item }}" }
  c:
    uses: shell.run
    for_each: ${{ steps.b.outputs }}
    with: { command: "echo c-${{ item.stdout | trim }}" }
outputs:
  last: ${{ steps.c.outputs | map(attribute='stdout') | list | length }}
Y
python3 - "$gen/v10k.yaml" <<'P'
import sys
with open(sys.argv[1], "w") as f:
    f.write("version: 1\nname: bench-validate\nconcurrency: 16\nsteps:\n")
    for i in range(10000):
        dep = f", needs: [s{i-1}]" if i % 10 else ""
        expr = f"${{{{ steps.s{i-1}.outputs.exit_code }}}}" if i % 10 == 5 else "x"
        f.write(f"  s{i}: {{ uses: shell.run{dep}, with: {{ command: \"echo {expr}\" }}, retry: {{ attempts: 2, delay: 1s }}, timeout: 5m }}\n")
P

row() { # name, engine command, floor command
  read -r ew em < <(python3 bench/timer.py "$RUNS" "$2")
  if [ -n "$3" ]; then
    read -r fw fm < <(python3 bench/timer.py "$RUNS" "$3")
    ratio=$(python3 -c "print(f'{$ew/$fw:.2f}x')")
  else fw=-; fm=-; ratio=-; fi
  printf '| %-28s | %8s | %8s | %9s | %9s | %7s |\n' "$1" "$ew" "$em" "$fw" "$fm" "$ratio"
}
echo "engine benchmarks, median of $RUNS runs ($(nproc) cores)"
printf '| %-28s | %8s | %8s | %9s | %9s | %7s |\n' workload "wall s" "peak MiB" "floor s" "floor MiB" "ratio"
printf '|%s|\n' "------------------------------|----------|----------|-----------|-----------|---------"
export ENGINE_STATE=$gen/state.db
row "W1 500 x true, c=16" "$ENGINE run $gen/w1.yaml --output json" "seq 500 | xargs -P16 -n1 sh -c true"
row "W1, state in memory" "$ENGINE --state :memory: run $gen/w1.yaml --output json" "seq 500 | xargs -P16 -n1 sh -c true"
row "W2 1->100->100 chain, c=16" "$ENGINE run $gen/w2.yaml --output json" "seq 0 99 | xargs -P16 -n1 sh -c 'echo \$0' | xargs -P16 -n1 sh -c 'echo c-\$0'"
row "validate 10,000 steps" "$ENGINE validate $gen/v10k.yaml" ""
# The cost of an out-of-process connector call (spawn + handshake + call): 100 calls one
# after the other, against 100 shell.run steps doing the same work.
for kind in plugin shell; do
  {
    echo "version: 1"; echo "concurrency: 1"; echo "steps:"
    if [ $kind = plugin ]; then
      echo "  up: { uses: sysinfo.uptime, for_each: 100 }"
    else
      echo "  up: { uses: shell.run, for_each: 100, with: { command: 'cut -d\" \" -f1 /proc/uptime' } }"
    fi
  } > "$gen/calls-$kind.yaml"
done
export PATH="$PWD/examples/connectors/bash:$PWD/examples/connectors/python:$PATH"
read -r pw _ < <(python3 bench/timer.py "$RUNS" "$ENGINE run $gen/calls-plugin.yaml --output json")
read -r sw _ < <(python3 bench/timer.py "$RUNS" "$ENGINE run $gen/calls-shell.yaml --output json")
python3 -c "print(f'plugin call (bash sysinfo.uptime): {$pw*10:.1f} ms each; shell.run doing the same: {$sw*10:.1f} ms each; protocol overhead {($pw-$sw)*10:.1f} ms per call')"
echo
echo "run state store: $(cargo run --release -q -p engine-state --example store_bench 2>/dev/null | grep "writes/s")"
