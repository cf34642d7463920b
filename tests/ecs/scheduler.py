"""A custom ECS scheduler in ~30 lines of boto3 (driven by tests/ecs_scheduler.rs): it reads
the cluster's container instances and their remainingResources, picks the one with the most
free CPU that fits the task definition (or the one named by PIN), and places there with
StartTask. Retries on a failure with fresh reads until no instance fits.

Environment: BERTH_ENDPOINT, AK, SK, FAMILY, COUNT, CPU, MEMORY, and optional PIN (an
instance id), ONLY (comma-separated instance ids it may use) and STALE=1 (read the instances
once and decide every placement on that view, never re-reading: the server's fence must refuse
what no longer fits). Prints one JSON line:
{"placed": [[taskArn, instanceArn]...], "failures": [reason...]}.
"""
import json
import os
import time
import uuid

import boto3
from botocore.config import Config

E = os.environ
ecs = boto3.client("ecs", endpoint_url=E["BERTH_ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id=E["AK"], aws_secret_access_key=E["SK"],
                   config=Config(retries={"max_attempts": 1}))
cpu, mem, only = int(E["CPU"]), int(E["MEMORY"]), [i for i in E.get("ONLY", "").split(",") if i]


def free(ci):
    r = {x["name"]: x.get("integerValue", 0) for x in ci["remainingResources"]}
    return r["CPU"], r["MEMORY"]


placed, failures = [], []


def read():
    arns = ecs.list_container_instances(cluster="default", status="ACTIVE")["containerInstanceArns"]
    return ecs.describe_container_instances(cluster="default", containerInstances=arns)["containerInstances"]


view = read() if E.get("STALE") else None
if E.get("READY"):  # tell the test this view is taken, and start together with the other one
    open(E["READY"], "w").close()
    while not os.path.exists(E["GO"]):
        time.sleep(0.02)


def place_one():
    for _ in range(100):
        cis = view if view is not None else read()
        cis = [c for c in cis if (not only or c["ec2InstanceId"] in only)
               and (not E.get("PIN") or c["ec2InstanceId"] == E["PIN"])]
        fits = [c for c in cis if free(c)[0] >= cpu and free(c)[1] >= mem]
        if not fits:
            return False
        best = max(fits, key=lambda c: free(c)[0])
        out = ecs.start_task(cluster="default", taskDefinition=E["FAMILY"], startedBy="my-scheduler",
                             containerInstances=[best["containerInstanceArn"]],
                             # A retry differs from the try (berth refuses a replayed signature).
                             referenceId=str(uuid.uuid4()),
                             tags=[{"key": "scheduler", "value": E.get("NAME", "s")}])
        if view is not None:  # account on the stale view; a refusal marks the instance full
            for r in best["remainingResources"]:
                if r["name"] in ("CPU", "MEMORY"):
                    r["integerValue"] = r["integerValue"] - (cpu if r["name"] == "CPU" else mem) \
                        if out["tasks"] else 0
        if out["tasks"]:
            placed.append([out["tasks"][0]["taskArn"], out["tasks"][0]["containerInstanceArn"]])
            return True
        failures.append(out["failures"][0]["reason"])  # lost a race (or stale view): read again
    return False


for _ in range(int(E["COUNT"])):
    if not place_one():
        break
print(json.dumps({"placed": placed, "failures": failures}))
