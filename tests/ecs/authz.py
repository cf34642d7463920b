"""ECS authorization through boto3 (driven by tests/ecs_api.rs): calls are authorized as
`ecs:<Operation>` on ECS ARNs. A role with Allow ecs:* and Deny ecs:DeleteService on one
service's ARN cannot delete that service (AccessDeniedException, HTTP 400) and deletes another;
a reader role (ecs:Describe*, ecs:List*) lists and describes but cannot create.

Environment: BERTH_ENDPOINT, AK/SK (admin), LAK/LSK (limited), RAK/RSK (reader), FAMILY,
SA, SB. Prints "OK" at the end.
"""
import os

import boto3
import botocore.exceptions
from botocore.config import Config

E = os.environ


def client(ak, sk):
    return boto3.client("ecs", endpoint_url=E["BERTH_ENDPOINT"], region_name="eu-west-1",
                        aws_access_key_id=ak, aws_secret_access_key=sk,
                        config=Config(retries={"max_attempts": 1}))


admin, limited, reader = client(E["AK"], E["SK"]), client(E["LAK"], E["LSK"]), client(E["RAK"], E["RSK"])


def denied(fn, **kw):
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Message"]
    raise AssertionError(f"{fn.__name__} {kw} was allowed")


fam, sa, sb = E["FAMILY"], E["SA"], E["SB"]
admin.register_task_definition(family=fam, containerDefinitions=[
    {"name": "app", "image": "local/busybox:1", "command": ["sleep", "60"], "memory": 16}])
for s in (sa, sb):
    limited.create_service(cluster="default", serviceName=s, taskDefinition=fam, desiredCount=0)

code, status, msg = denied(limited.delete_service, cluster="default", service=sa)
assert (code, status) == ("AccessDeniedException", 400), (code, status, msg)
assert "ecs:DeleteService" in msg and f"service/default/{sa}" in msg, msg
# The ARN spelled in another region or with the name alone is the same service.
arn_elsewhere = f"arn:aws:ecs:us-west-2:000000000000:service/default/{sa}"
assert denied(limited.delete_service, cluster="default", service=arn_elsewhere)[0] == "AccessDeniedException"
assert limited.describe_services(cluster="default", services=[sa])["services"][0]["serviceName"] == sa
assert limited.delete_service(cluster="default", service=sb)["service"]["serviceName"] == sb

arns = reader.list_services(cluster="default")["serviceArns"]
assert f"arn:aws:ecs:eu-west-1:000000000000:service/default/{sa}" in arns, arns
assert reader.describe_services(cluster="default", services=[sa])["services"]
code, status, msg = denied(reader.create_service, cluster="default", serviceName="nope",
                           taskDefinition=fam, desiredCount=0)
assert (code, status) == ("AccessDeniedException", 400) and "ecs:CreateService" in msg, (code, msg)
assert denied(reader.tag_resource, resourceArn=arns[0], tags=[{"key": "a", "value": "b"}])[0] == "AccessDeniedException"
print("OK")
