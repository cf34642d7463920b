"""More of ECS through boto3 against a real `berth up` (driven by tests/ecs_api.rs): tags on
every taggable resource, attributes used by memberOf placement, account settings, cluster
settings, service deployments, DeleteTaskDefinitions, DeregisterContainerInstance's refusal,
the TasksRunning / TasksStopped / ServicesStable waiters on real containers, and an
unimplemented operation's error.

Environment: BERTH_ENDPOINT, AK, SK, IMAGE, FAMILY, SERVICE. Prints "OK" at the end.
"""
import os
import time

import boto3
import botocore.exceptions
from botocore.config import Config

E = os.environ
ENDPOINT, IMAGE, FAM, SVC = E["BERTH_ENDPOINT"], E["IMAGE"], E["FAMILY"], E["SERVICE"]
ecs = boto3.client("ecs", endpoint_url=ENDPOINT, region_name="us-east-1",
                   aws_access_key_id=E["AK"], aws_secret_access_key=E["SK"],
                   config=Config(retries={"max_attempts": 1}))
W = {"Delay": 1, "MaxAttempts": 120}


def error_code(fn, **kw):
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"]["Message"]
    raise AssertionError(f"{fn.__name__} {kw} did not fail")


def tags_of(arn):
    return {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}


def container(i):
    return [{"name": "app", "image": IMAGE, "command": ["sleep", str(3600 + i)], "memory": 32,
             "essential": True}]


# Tags on create, Tag/Untag/List on every taggable resource, include TAGS on Describe*.
c = ecs.create_cluster(clusterName="default")["cluster"]
carn = c["clusterArn"]
ecs.tag_resource(resourceArn=carn, tags=[{"key": "team", "value": "a"}])
assert tags_of(carn) == {"team": "a"}, tags_of(carn)
dc = ecs.describe_clusters(clusters=["default"], include=["TAGS"])["clusters"][0]
assert {"key": "team", "value": "a"} in dc["tags"], dc
td1 = ecs.register_task_definition(family=FAM, containerDefinitions=container(0),
                                   tags=[{"key": "tier", "value": "web"}])
tdarn = td1["taskDefinition"]["taskDefinitionArn"]
assert td1["tags"] == [{"key": "tier", "value": "web"}], td1
dtd = ecs.describe_task_definition(taskDefinition=tdarn, include=["TAGS"])
assert dtd["tags"] == [{"key": "tier", "value": "web"}], dtd
ecs.untag_resource(resourceArn=tdarn, tagKeys=["tier"])
assert tags_of(tdarn) == {}, tags_of(tdarn)
s = ecs.create_service(cluster="default", serviceName=SVC, taskDefinition=tdarn, desiredCount=1,
                       tags=[{"key": "owner", "value": "me"}])["service"]
sarn = s["serviceArn"]
assert tags_of(sarn) == {"owner": "me"}, tags_of(sarn)
ds = ecs.describe_services(cluster="default", services=[SVC], include=["TAGS"])["services"][0]
assert ds["tags"] == [{"key": "owner", "value": "me"}], ds
code, _ = error_code(ecs.tag_resource, resourceArn=sarn.replace(SVC, "ghost"),
                     tags=[{"key": "k", "value": "v"}])
assert code == "ResourceNotFoundException", code
code, _ = error_code(ecs.tag_resource, resourceArn=sarn, tags=[{"key": "aws:x", "value": "v"}])
assert code == "InvalidParameterException", code

# The ServicesStable waiter on the real container.
ecs.get_waiter("services_stable").wait(cluster="default", services=[SVC], WaiterConfig=W)

# Container instances: tags, attributes, memberOf.
ci = ecs.list_container_instances(cluster="default")["containerInstanceArns"][0]
ecs.tag_resource(resourceArn=ci, tags=[{"key": "rack", "value": "r1"}])
dci = ecs.describe_container_instances(cluster="default", containerInstances=[ci],
                                       include=["TAGS"])["containerInstances"][0]
assert {"key": "rack", "value": "r1"} in dci["tags"], dci
ecs.put_attributes(cluster="default", attributes=[
    {"name": "stack", "value": "blue", "targetType": "container-instance", "targetId": ci}])
la = ecs.list_attributes(cluster="default", targetType="container-instance",
                         attributeName="stack")["attributes"]
assert la == [{"name": "stack", "value": "blue", "targetType": "container-instance",
               "targetId": ci}], la
dci = ecs.describe_container_instances(cluster="default", containerInstances=[ci])["containerInstances"][0]
assert {"name": "stack", "value": "blue"} in dci["attributes"], dci

# RunTask with a memberOf constraint on the attribute, tags, and the TasksRunning waiter.
td2 = ecs.register_task_definition(
    family=FAM, containerDefinitions=container(1),
    placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == blue"}])
rt = ecs.run_task(cluster="default", taskDefinition=td2["taskDefinition"]["taskDefinitionArn"],
                  tags=[{"key": "job", "value": "j1"}])
assert rt["failures"] == [], rt
tarn = rt["tasks"][0]["taskArn"]
assert rt["tasks"][0]["tags"] == [{"key": "job", "value": "j1"}], rt
ecs.get_waiter("tasks_running").wait(cluster="default", tasks=[tarn], WaiterConfig=W)
dt = ecs.describe_tasks(cluster="default", tasks=[tarn], include=["TAGS"])["tasks"][0]
assert dt["containerInstanceArn"] == ci and dt["tags"] == [{"key": "job", "value": "j1"}], dt
ecs.tag_resource(resourceArn=tarn, tags=[{"key": "phase", "value": "2"}])
assert tags_of(tarn) == {"job": "j1", "phase": "2"}, tags_of(tarn)
code, msg = error_code(ecs.deregister_container_instance, cluster="default", containerInstance=ci)
assert code == "InvalidParameterException" and "running tasks" in msg, (code, msg)
ecs.stop_task(cluster="default", task=tarn, reason="done")
ecs.get_waiter("tasks_stopped").wait(cluster="default", tasks=[tarn], WaiterConfig=W)

# A constraint no instance meets: the task waits unplaced (berth keeps it PROVISIONING).
ecs.delete_attributes(cluster="default", attributes=[
    {"name": "stack", "targetType": "container-instance", "targetId": ci}])
assert ecs.list_attributes(cluster="default", targetType="container-instance",
                           attributeName="stack")["attributes"] == []
rt = ecs.run_task(cluster="default", taskDefinition=td2["taskDefinition"]["taskDefinitionArn"])
t2 = rt["tasks"][0]["taskArn"]
time.sleep(3)
t = ecs.describe_tasks(cluster="default", tasks=[t2])["tasks"][0]
assert "containerInstanceArn" not in t and t["lastStatus"] == "PROVISIONING", t
ecs.stop_task(cluster="default", task=t2)

# Service deployments: an update to revision 2 is a second deployment.
ecs.register_task_definition(family=FAM, containerDefinitions=container(2))
ecs.update_service(cluster="default", service=SVC, taskDefinition=f"{FAM}:3")
ecs.get_waiter("services_stable").wait(cluster="default", services=[SVC], WaiterConfig=W)


def settled():
    lst = ecs.list_service_deployments(cluster="default", service=SVC)["serviceDeployments"]
    return lst if lst and lst[0]["status"] == "SUCCESSFUL" else None


deadline = time.time() + 60
while not (lst := settled()) and time.time() < deadline:
    time.sleep(1)
assert lst and len(lst) >= 2, lst
assert lst[0]["serviceArn"] == sarn and ":service-deployment/default/" in lst[0]["serviceDeploymentArn"], lst
p1 = ecs.list_service_deployments(cluster="default", service=SVC, maxResults=1)
assert len(p1["serviceDeployments"]) == 1 and p1.get("nextToken"), p1
only_ok = ecs.list_service_deployments(cluster="default", service=SVC, status=["SUCCESSFUL"])
assert all(d["status"] == "SUCCESSFUL" for d in only_ok["serviceDeployments"]), only_ok
missing = lst[0]["serviceDeploymentArn"].rsplit("/", 1)[0] + "/nope"
dd = ecs.describe_service_deployments(serviceDeploymentArns=[lst[0]["serviceDeploymentArn"], missing])
d0 = dd["serviceDeployments"][0]
assert d0["targetServiceRevision"]["arn"].endswith(lst[0]["serviceDeploymentArn"].rsplit("/", 1)[1]), d0
assert d0["targetServiceRevision"]["requestedTaskCount"] == 1 and d0["sourceServiceRevisions"], d0
assert dd["failures"][0]["arn"] == missing and dd["failures"][0]["reason"] == "MISSING", dd

# Cluster settings.
uc = ecs.update_cluster_settings(cluster="default",
                                 settings=[{"name": "containerInsights", "value": "enabled"}])
assert uc["cluster"]["settings"] == [{"name": "containerInsights", "value": "enabled"}], uc
uc = ecs.update_cluster(cluster="default", settings=[{"name": "containerInsights", "value": "disabled"}])
dc = ecs.describe_clusters(clusters=["default"], include=["SETTINGS"])["clusters"][0]
assert dc["settings"] == [{"name": "containerInsights", "value": "disabled"}], dc
code, _ = error_code(ecs.update_cluster_settings, cluster="default",
                     settings=[{"name": "bogus", "value": "x"}])
assert code == "InvalidParameterException", code
assert error_code(ecs.update_cluster, cluster="nope", settings=[])[0] == "ClusterNotFoundException"

# Account settings, stored.
ps = ecs.put_account_setting(name="containerInsights", value="enabled")["setting"]
assert ps["value"] == "enabled" and ps["principalArn"].endswith(":user/" + E["IDENTITY"]), ps
ecs.put_account_setting_default(name="awsvpcTrunking", value="enabled")
mine = ecs.list_account_settings(name="containerInsights")["settings"]
assert [s["value"] for s in mine] == ["enabled"], mine
eff = {s["name"]: s["value"] for s in ecs.list_account_settings(effectiveSettings=True, maxResults=10)["settings"]}
assert eff["awsvpcTrunking"] == "enabled" and eff["containerInsights"] == "enabled", eff
allp = [s for p in ecs.get_paginator("list_account_settings").paginate(
    effectiveSettings=True, PaginationConfig={"PageSize": 4}) for s in p["settings"]]
assert len(allp) >= 10, allp
ecs.delete_account_setting(name="containerInsights")
assert ecs.list_account_settings(name="containerInsights")["settings"] == []
assert error_code(ecs.put_account_setting, name="nope", value="x")[0] == "InvalidParameterException"

# DeleteTaskDefinitions: ACTIVE refused, INACTIVE deleted.
ecs.deregister_task_definition(taskDefinition=f"{FAM}:2")
dl = ecs.delete_task_definitions(taskDefinitions=[f"{FAM}:2", f"{FAM}:3"])
assert [t["revision"] for t in dl["taskDefinitions"]] == [2], dl
assert dl["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS", dl
assert "ACTIVE" in dl["failures"][0]["reason"], dl
code, _ = error_code(ecs.describe_task_definition, taskDefinition=f"{FAM}:2")
assert code == "ClientException", code

# Members berth does not apply are refused by name, never ignored.
code, msg = error_code(ecs.run_task, cluster="default", taskDefinition=f"{FAM}:3",
                       overrides={"containerOverrides": [{"name": "app", "command": ["true"]}]})
assert code == "UnsupportedFeatureException" and "overrides" in msg, (code, msg)

# An operation berth does not implement names itself.
code, msg = error_code(ecs.list_services_by_namespace, namespace="ns")
assert code == "UnsupportedFeatureException" and "ListServicesByNamespace" in msg, (code, msg)

ecs.update_service(cluster="default", service=SVC, desiredCount=0)
ecs.delete_service(cluster="default", service=SVC, force=True)
print("OK")
