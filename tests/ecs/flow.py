"""The ECS flow through boto3 against a real `berth up` (driven by tests/ecs_api.rs).

Environment: BERTH_ENDPOINT, AK, SK, IMAGE, FAMILY, SERVICE. Prints "OK" at the end; any
failed check raises.
"""
import os
import time

import boto3
import botocore.exceptions
from botocore.config import Config

E = os.environ
ENDPOINT, IMAGE, FAM, SVC = E["BERTH_ENDPOINT"], E["IMAGE"], E["FAMILY"], E["SERVICE"]


def client(secret):
    return boto3.client(
        "ecs",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=E["AK"],
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


ecs = client(E["SK"])


def error_code(fn, **kw):
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]
    raise AssertionError(f"{fn.__name__} {kw} did not fail")


def wait(what, pred, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


# Clusters.
c = ecs.create_cluster(clusterName="default")["cluster"]
assert c["clusterArn"] == "arn:aws:ecs:us-east-1:000000000000:cluster/default", c
assert c["clusterArn"] in ecs.list_clusters()["clusterArns"]
d = ecs.describe_clusters(clusters=["default", "nope"])
assert d["clusters"][0]["clusterName"] == "default", d
assert d["failures"][0]["reason"] == "MISSING", d

# Three revisions of one family; pagination with maxResults.
for i in range(3):
    td = ecs.register_task_definition(
        family=FAM,
        containerDefinitions=[
            {
                "name": "app",
                "image": IMAGE,
                "command": ["sleep", str(3600 + i)],
                "memory": 32,
                "essential": True,
            }
        ],
    )["taskDefinition"]
    assert td["revision"] == i + 1, td
    assert td["taskDefinitionArn"].endswith(f":task-definition/{FAM}:{i + 1}"), td
p1 = ecs.list_task_definitions(familyPrefix=FAM, maxResults=2)
assert len(p1["taskDefinitionArns"]) == 2 and p1.get("nextToken"), p1
p2 = ecs.list_task_definitions(familyPrefix=FAM, maxResults=2, nextToken=p1["nextToken"])
assert len(p2["taskDefinitionArns"]) == 1 and "nextToken" not in p2, p2
assert p2["taskDefinitionArns"][0].endswith(f"{FAM}:3")
paged = [
    a
    for page in ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix=FAM, PaginationConfig={"PageSize": 1}
    )
    for a in page["taskDefinitionArns"]
]
assert len(paged) == 3, paged
desc = ecs.list_task_definitions(familyPrefix=FAM, sort="DESC")["taskDefinitionArns"]
assert desc[0].endswith(f"{FAM}:3"), desc
assert FAM in ecs.list_task_definition_families(familyPrefix=FAM)["families"]
td1 = ecs.describe_task_definition(taskDefinition=f"{FAM}:1")["taskDefinition"]
assert td1["containerDefinitions"][0]["command"] == ["sleep", "3600"], td1
code, meta = error_code(ecs.describe_task_definition, taskDefinition="no-such-family")
assert code == "ClientException", code
assert meta["HTTPStatusCode"] == 400 and meta["RequestId"], meta

# A service of 2 real containers.
s = ecs.create_service(
    cluster="default", serviceName=SVC, taskDefinition=f"{FAM}:1", desiredCount=2
)["service"]
assert s["serviceArn"] == f"arn:aws:ecs:us-east-1:000000000000:service/default/{SVC}", s
assert s["status"] == "ACTIVE" and s["desiredCount"] == 2, s


def running(n):
    def check():
        r = ecs.describe_services(cluster="default", services=[SVC])["services"][0]
        return r if r["runningCount"] == n else None

    return check


svc = wait("runningCount == 2", running(2))
arns = ecs.list_tasks(cluster="default", serviceName=SVC)["taskArns"]
assert len(arns) == 2, arns
missing = f"arn:aws:ecs:us-east-1:000000000000:task/default/nosuchtask"
dt = ecs.describe_tasks(cluster="default", tasks=arns + [missing])
assert len(dt["tasks"]) == 2 and dt["failures"][0]["arn"] == missing, dt
assert all(t["lastStatus"] == "RUNNING" for t in dt["tasks"]), dt
assert all(t["containers"][0]["runtimeId"] for t in dt["tasks"]), dt
assert ecs.list_tasks(cluster="default", family=FAM)["taskArns"]
ds = ecs.describe_services(cluster="default", services=[SVC, "ghost"])
assert ds["failures"][0]["reason"] == "MISSING", ds

# Scale down to 1.
u = ecs.update_service(cluster="default", service=SVC, desiredCount=1)["service"]
assert u["desiredCount"] == 1, u
wait("runningCount == 1", running(1))
ecs.get_waiter("services_stable").wait(
    cluster="default", services=[SVC], WaiterConfig={"Delay": 1, "MaxAttempts": 120}
)
wait(
    "one RUNNING task listed",
    lambda: len(ecs.list_tasks(cluster="default", serviceName=SVC)["taskArns"]) == 1,
)

# run-task / stop-task with the reason kept.
rt = ecs.run_task(cluster="default", taskDefinition=FAM, startedBy="ecs-test")
assert rt["failures"] == [] and rt["tasks"][0]["taskDefinitionArn"].endswith(f"{FAM}:3"), rt
tarn = rt["tasks"][0]["taskArn"]
assert tarn in ecs.list_tasks(cluster="default", startedBy="ecs-test")["taskArns"]
st = ecs.stop_task(cluster="default", task=tarn, reason="stopped by the ECS test")["task"]
assert st["desiredStatus"] == "STOPPED" and st["stoppedReason"] == "stopped by the ECS test", st
assert tarn in ecs.list_tasks(cluster="default", desiredStatus="STOPPED")["taskArns"]

# Container instances.
ci = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
assert ci, ci
di = ecs.describe_container_instances(cluster="default", containerInstances=ci)
inst = di["containerInstances"][0]
assert {r["name"] for r in inst["registeredResources"]} >= {"CPU", "MEMORY"}, inst

# Errors as botocore raises them.
assert error_code(ecs.describe_services, cluster="nope", services=[SVC])[0] == "ClusterNotFoundException"
assert error_code(ecs.update_service, cluster="default", service="ghost", desiredCount=1)[0] == "ServiceNotFoundException"
assert error_code(ecs.delete_service, cluster="default", service=SVC)[0] == "InvalidParameterException"
assert error_code(ecs.list_task_definitions, maxResults=1000)[0] == "InvalidParameterException"
assert error_code(ecs.update_service, cluster="default", service=SVC, forceNewDeployment=True)[0] == "UnsupportedFeatureException"
bad_code, bad_meta = error_code(client("not-the-secret").list_clusters)
assert bad_code == "UnrecognizedClientException", bad_code
assert bad_meta["HTTPStatusCode"] in (401, 403), bad_meta

# Delete with force: the service drains and its tasks stop.
dl = ecs.delete_service(cluster="default", service=SVC, force=True)["service"]
assert dl["status"] == "DRAINING", dl
wait(
    "no running tasks of the deleted service",
    lambda: not ecs.list_tasks(cluster="default", serviceName=SVC)["taskArns"],
)
dr = ecs.deregister_task_definition(taskDefinition=f"{FAM}:1")["taskDefinition"]
assert dr["status"] == "INACTIVE", dr
active = ecs.list_task_definitions(familyPrefix=FAM)["taskDefinitionArns"]
assert len(active) == 2, active
# Draining an instance, then back to ACTIVE.
up = ecs.update_container_instances_state(cluster="default", containerInstances=ci, status="DRAINING")
assert up["containerInstances"][0]["status"] == "DRAINING", up
listed = ecs.list_container_instances(cluster="default", status="DRAINING")["containerInstanceArns"]
assert listed == ci, listed
up = ecs.update_container_instances_state(cluster="default", containerInstances=ci, status="ACTIVE")
assert up["containerInstances"][0]["status"] == "ACTIVE", up
print("OK")
