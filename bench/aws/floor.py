"""The floor for bench/aws/run.sh: plain boto3 doing what the engine's workflow does.

create:    N x RunInstances (same parameters as aws.instance.create sends: type, AMI, one
           encrypted gp3 root volume, the shared security group, tags, a ClientToken), 16
           threads, each then waiting until its instance is running (DescribeInstances);
terminate: N x TerminateInstances, 16 threads, each waiting until its instance is terminated.
Prints `create S` and `terminate S` (wall seconds) on stdout.
"""
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3

endpoint, region, sg, ami, itype, n, threads = sys.argv[1:8]
n, threads = int(n), int(threads)
ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region,
                   aws_access_key_id="testing", aws_secret_access_key="testing-secret")
run = f"boto3-{uuid.uuid4().hex[:8]}"


def wait(iid, state):
    while True:
        r = ec2.describe_instances(InstanceIds=[iid])
        if r["Reservations"][0]["Instances"][0]["State"]["Name"] == state:
            return
        time.sleep(0.5)


def create(i):
    r = ec2.run_instances(
        ImageId=ami, InstanceType=itype, MinCount=1, MaxCount=1, ClientToken=f"{run}-{i}",
        SecurityGroupIds=[sg],
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}],
        TagSpecifications=[{"ResourceType": t, "Tags": [{"Key": "Name", "Value": f"node-{i}"}, {"Key": "engine:run", "Value": run}]} for t in ("instance", "volume")],
    )
    iid = r["Instances"][0]["InstanceId"]
    wait(iid, "running")
    return iid


def terminate(iid):
    ec2.terminate_instances(InstanceIds=[iid])
    wait(iid, "terminated")


with ThreadPoolExecutor(threads) as pool:
    t = time.perf_counter()
    ids = list(pool.map(create, range(n)))
    print(f"create {time.perf_counter() - t:.3f}")
    assert len(set(ids)) == n
    t = time.perf_counter()
    list(pool.map(terminate, ids))
    print(f"terminate {time.perf_counter() - t:.3f}")
