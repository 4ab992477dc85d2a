#!/usr/bin/env bash
# The aws connector beside plain boto3, against one moto server (scripts/peers/moto.sh).
#   bench/aws/run.sh                 # N=100 instances, 16 at a time
# (a) the engine: a for_each of N aws.instance.create (t3.micro, moto's Ubuntu AMI, 8 GB
#     encrypted gp3, one shared security group, wait_for: running), concurrency 16; then
#     `engine destroy RUN` (terminate each and wait for `terminated`);
# (b) the floor, bench/aws/floor.py: boto3 making the same RunInstances calls from 16 threads,
#     each waiting for `running`; then TerminateInstances and wait, 16 threads.
# Prints wall seconds and engine/boto3 ratios for create and terminate; both run in the same
# invocation against the same moto (reset in between). Quote ratios, not absolute times: the
# machine is shared and noisy. ENGINE=path skips the release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-100}
THREADS=${THREADS:-16}
REGION=us-east-1
AMI=ami-785db401
TYPE=t3.micro

if [ -z "${ENGINE:-}" ]; then
    cargo build --release -p engine --locked -q
    ENGINE=$PWD/target/release/engine
fi
moto_server=$(bash scripts/peers/moto.sh)
venv_python="$(dirname "$moto_server")/python"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=true MOTO_ENABLE_AMI_VALIDATION=true \
    "$moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; rm -rf "$work"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf -o /dev/null "$url/moto-api/" && break; sleep 0.1; done

now() { python3 -c 'import time; print(time.perf_counter())'; }
make_group() {
    "$venv_python" - "$url" "$REGION" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name=sys.argv[2], aws_access_key_id="testing", aws_secret_access_key="testing-secret")
print(ec2.create_security_group(GroupName="bench", Description="bench")["GroupId"])
PY
}

# (a) the engine.
sg=$(make_group)
cat > "$work/w4.yaml" <<Y
version: 1
name: bench-aws
concurrency: $THREADS
connectors:
  aws: { endpoint: "$url", region: $REGION, access_key_id: testing, secret_access_key: testing-secret }
steps:
  node:
    uses: aws.instance.create
    for_each: \${{ range($N) }}
    with: { name: "node-\${{ index }}", instance_type: $TYPE, ami: $AMI, volume_gb: 8, security_group_ids: ["$sg"], wait_for: running }
Y
export ENGINE_STATE="$work/state.db"
t0=$(now)
"$ENGINE" run "$work/w4.yaml" --output json >"$work/run.jsonl"
t1=$(now)
run_id=$(head -1 "$work/run.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
tail -1 "$work/run.jsonl" | grep -q '"status":"succeeded"' || { echo "engine run failed" >&2; tail -3 "$work/run.jsonl" >&2; exit 1; }
t2=$(now)
"$ENGINE" destroy "$run_id" >"$work/destroy.txt" 2>&1
t3=$(now)
live=$("$venv_python" - "$url" "$REGION" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name=sys.argv[2], aws_access_key_id="testing", aws_secret_access_key="testing-secret")
r = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
print(sum(len(x["Instances"]) for x in r["Reservations"]))
PY
)
[ "$live" = 0 ] || { echo "engine destroy left $live instances" >&2; exit 1; }
curl -sf -X POST -o /dev/null "$url/moto-api/reset"

# (b) boto3.
sg=$(make_group)
floor=$("$venv_python" bench/aws/floor.py "$url" "$REGION" "$sg" "$AMI" "$TYPE" "$N" "$THREADS")

python3 - "$t0" "$t1" "$t2" "$t3" "$floor" "$N" "$THREADS" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
floor = dict(l.split() for l in sys.argv[5].splitlines())
n, threads = sys.argv[6], sys.argv[7]
ec, et = t1 - t0, t3 - t2
bc, bt = float(floor["create"]), float(floor["terminate"])
print(f"aws on moto: {n} instances, {threads} at a time (wall seconds; one run)")
print(f"| phase | engine | boto3 | engine / boto3 |")
print(f"|---|---|---|---|")
print(f"| create (wait running) | {ec:.2f} | {bc:.2f} | {ec / bc:.2f}x |")
print(f"| terminate (wait terminated) | {et:.2f} | {bt:.2f} | {et / bt:.2f}x |")
PY
