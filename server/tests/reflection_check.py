#!/usr/bin/env python3
"""Drives a percyd node through server reflection only, as grpcurl does: lists the services
over grpc.reflection.v1 and v1alpha, then builds request types from the reflected descriptors
and calls methods dynamically. No .proto files and no generated code.

Usage: reflection_check.py HOST:PORT   (exit 0 and prints "ok" when everything checks out)
Needs: pip install grpcio grpcio-reflection
"""

import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT_S = 20
EXPECTED = {
    "percy.v1.AgentService",
    "percy.v1.TaskService",
    "percy.v1.PlanService",
    "percy.v1.LockService",
    "percy.v1.ConfigService",
    "percy.v1.DefinitionService",
    "percy.v1.MessageService",
    "percy.v1.WatchService",
    "percy.v1.ClusterService",
    "percy.v1.TokenService",
    "grpc.health.v1.Health",
}
# Node-to-node only: never advertised to clients.
INTERNAL = "percy.internal.v1.RaftService"


def list_services(channel, version):
    # v1 and v1alpha messages are identical on the wire; only the service path differs.
    rpc = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = rpc(iter([request]), timeout=TIMEOUT_S)
    return {s.name for r in responses for s in r.list_services_response.service}


class Dynamic:
    """Calls any method by name with a JSON request, like `grpcurl -d JSON ADDR METHOD`."""

    def __init__(self, channel):
        self.channel = channel
        self.pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))

    def call(self, full_method, request_json):
        service_name, method_name = full_method.split("/")
        method = self.pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        rpc = self.channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        request = json_format.Parse(request_json, request_cls())
        return json_format.MessageToDict(rpc(request, timeout=TIMEOUT_S))


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    addr = sys.argv[1]
    channel = grpc.insecure_channel(addr)
    for version in ("v1", "v1alpha"):
        services = list_services(channel, version)
        missing = EXPECTED - services
        check(not missing, f"reflection {version} lists every service; missing {missing}")
        check(INTERNAL not in services, f"reflection {version} hides the internal service")

    d = Dynamic(channel)
    health = d.call("grpc.health.v1.Health/Check", "{}")
    check(health.get("status") == "SERVING", f"health is SERVING: {health}")

    put = d.call("percy.v1.ConfigService/Put", '{"key": "reflection", "value": "aGk="}')
    check(put["entry"]["key"] == "reflection", f"put answered the entry: {put}")
    got = d.call("percy.v1.ConfigService/Get", '{"key": "reflection"}')
    check(got["entry"]["value"] == "aGk=", f"get returns what put wrote: {got}")

    agent = d.call("percy.v1.AgentService/Register", '{"name": "reflected"}')
    agent_id = agent["agent"]["id"]
    d.call("percy.v1.TaskService/Submit", '{"task": {"id": "t1", "title": "via reflection"}}')
    claim = d.call("percy.v1.TaskService/Claim", f'{{"agentId": "{agent_id}", "taskId": "t1"}}')
    check(claim["task"]["status"] == "TASK_STATUS_CLAIMED", f"claimed: {claim}")
    check(int(claim["task"]["claimToken"]) > 0, f"claim carries a token: {claim}")
    print("ok")


if __name__ == "__main__":
    main()
