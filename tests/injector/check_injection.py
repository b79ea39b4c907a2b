#!/usr/bin/env python3
"""Checks sidecar-injector from the outside, with independent implementations:
Python's ssl and http.client talk to the webhook over HTTPS, `jsonpatch`
applies its patches, `kubernetes-validate` checks the results against the
Kubernetes schemas.

  check_injection.py golden    --url URL --ca CA --dir DIR [--update]
  check_injection.py malformed --url URL --ca CA
  check_injection.py rotated   --url URL --ca NEW_CA [--timeout S]
  check_injection.py validate  FILE...    (multi-document YAML)
  check_injection.py post      --url URL --ca CA --object FILE [--operation OP]
                               [--server-name NAME]
                               (any webhook: the review's response, as JSON;
                               NAME is the name the certificate must carry, as
                               the API server checks `<service>.<ns>.svc`)

Each prints one JSON summary line on success and exits 1 with the reason
otherwise.
"""

import argparse
import base64
import glob
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse
import uuid

import jsonpatch
import kubernetes_validate
import yaml

K8S_VERSION = "1.31"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """Dials host:port but verifies the certificate for `server_name`."""

    def __init__(self, host, port, server_name, context, timeout):
        super().__init__(host, port, context=context, timeout=timeout)
        self.server_name = server_name
        self.tls_context = context

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.server_name)


def post(url, ca, body, timeout=10, server_name=None):
    u = urllib.parse.urlparse(url)
    context = ssl.create_default_context(cafile=ca)
    if server_name:
        conn = NamedHTTPSConnection(u.hostname, u.port, server_name, context, timeout)
    else:
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=context, timeout=timeout)
    try:
        conn.request("POST", u.path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def review(pod, version, namespace="shop", operation="CREATE"):
    return {
        "apiVersion": f"admission.k8s.io/{version}",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
        },
    }


def send(url, ca, request, server_name=None):
    try:
        status, body = post(url, ca, json.dumps(request).encode(), server_name=server_name)
    except ssl.SSLError as e:
        fail(f"TLS: {e}")
    if status != 200:
        fail(f"HTTP {status}: {body[:300]!r}")
    answer = json.loads(body)
    if answer.get("apiVersion") != request["apiVersion"] or answer.get("kind") != "AdmissionReview":
        fail(f"the answer does not repeat apiVersion/kind: {answer}")
    response = answer["response"]
    if response.get("uid") != request["request"]["uid"]:
        fail(f"the answer's uid {response.get('uid')} is not the request's")
    return response


def patched(pod, response):
    if not response.get("allowed"):
        fail(f"refused: {response.get('status')}")
    if "patch" not in response:
        return pod, False
    if response.get("patchType") != "JSONPatch":
        fail(f"patchType {response.get('patchType')!r}")
    patch = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(pod, patch), True


def validate(obj, what):
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except Exception as e:  # ValidationError and friends: report, do not trace
        fail(f"{what} does not validate against Kubernetes {K8S_VERSION}: {str(e)[:600]}")


def golden(args):
    inputs = sorted(p for p in glob.glob(os.path.join(args.dir, "*.yaml")) if not p.endswith(".injected.yaml"))
    if not inputs:
        fail(f"no inputs in {args.dir}")
    results = {}
    for i, path in enumerate(inputs):
        name = os.path.basename(path)[: -len(".yaml")]
        with open(path) as f:
            pod = yaml.safe_load(f)
        validate(pod, f"{name} (input)")
        version = "v1" if i % 2 == 0 else "v1beta1"
        out, changed = patched(pod, send(args.url, args.ca, review(pod, version)))
        expected_path = os.path.join(args.dir, f"{name}.injected.yaml")
        if args.update:
            with open(expected_path, "w") as f:
                yaml.safe_dump(out, f, sort_keys=True)
        with open(expected_path) as f:
            expected = yaml.safe_load(f)
        if out != expected:
            diff = jsonpatch.make_patch(expected, out).patch
            fail(f"{name}: the injected pod differs from {expected_path}: {json.dumps(diff)[:1500]}")
        validate(out, f"{name} (injected)")
        # A second injection of the result is a no-op.
        again, changed_again = patched(out, send(args.url, args.ca, review(out, version)))
        if changed_again or again != out:
            fail(f"{name}: injecting the injected pod changed it again")
        results[name] = "injected" if changed else "unchanged"
    print(json.dumps({"golden": results}))


def malformed(args):
    valid_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
    good = review(valid_pod, "v1")
    no_uid = json.loads(json.dumps(good))
    del no_uid["request"]["uid"]
    bad_version = dict(good, apiVersion="admission.k8s.io/v2")
    bad_pod = review({"spec": {"containers": "nope"}}, "v1beta1")
    bad_annotation = review(
        dict(valid_pod, metadata={"name": "x", "annotations": {"traffic.sidecar.istio.io/excludeInboundPorts": "http"}}), "v1"
    )
    deep = "[" * 100000 + "]" * 100000
    cases = {
        "empty body": b"",
        "not json": b"\xff\xfe garbage",
        "json array": b"[1, 2, 3]",
        "empty object": b"{}",
        "deeply nested": deep.encode(),
        "request without uid": json.dumps(no_uid).encode(),
        "unknown apiVersion": json.dumps(bad_version).encode(),
        "containers not a list": json.dumps(bad_pod).encode(),
        "bad traffic annotation": json.dumps(bad_annotation).encode(),
    }
    seen = {}
    for name, body in cases.items():
        status, raw = post(args.url, args.ca, body)
        if status not in (200, 400):
            fail(f"{name}: HTTP {status}")
        try:
            answer = json.loads(raw)
            response = answer["response"]
        except Exception:
            fail(f"{name}: the answer is not an AdmissionReview: {raw[:200]!r}")
        if response.get("allowed") is not False:
            fail(f"{name}: allowed: {response}")
        code = response.get("status", {}).get("code")
        message = response.get("status", {}).get("message", "")
        if code != 400 or not message:
            fail(f"{name}: expected an invalid (400) answer with a message, got {response}")
        seen[name] = message
    if "excludeInboundPorts" not in seen["bad traffic annotation"]:
        fail(f"the annotation is not named: {seen['bad traffic annotation']}")
    if "containers" not in seen["containers not a list"]:
        fail(f"the field is not named: {seen['containers not a list']}")
    # Still serving, and a valid review still works.
    out, changed = patched(valid_pod, send(args.url, args.ca, good))
    if not changed:
        fail("a valid pod was not injected after the malformed reviews")
    print(json.dumps({"malformed": seen}))


def rotated(args):
    deadline = time.time() + args.timeout
    last = None
    while time.time() < deadline:
        try:
            u = urllib.parse.urlparse(args.url)
            context = ssl.create_default_context(cafile=args.ca)
            conn = http.client.HTTPSConnection(u.hostname, u.port, context=context, timeout=5)
            conn.connect()
            conn.close()
            print(json.dumps({"rotated": True}))
            return
        except ssl.SSLError as e:
            last = e
            time.sleep(0.2)
    fail(f"the new certificate is not served after {args.timeout}s: {last}")


def validate_files(args):
    kinds = []
    for path in args.files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                validate(doc, f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}")
                spec = doc.get("spec", {})
                template = {
                    "Pod": doc,
                    "CronJob": spec.get("jobTemplate", {}).get("spec", {}).get("template"),
                }.get(doc.get("kind"), spec.get("template"))
                containers = [c["name"] for c in (template or {}).get("spec", {}).get("containers", [])]
                kinds.append({"kind": doc.get("kind"), "name": doc.get("metadata", {}).get("name"), "containers": containers})
    print(json.dumps({"documents": kinds}))


def post_object(args):
    with open(args.object) as f:
        obj = yaml.safe_load(f)
    request = review(obj, args.version, namespace=args.namespace, operation=args.operation)
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    request["request"]["kind"] = {"group": group, "version": version, "kind": obj.get("kind", "")}
    request["request"]["name"] = obj.get("metadata", {}).get("name", "")
    print(json.dumps(send(args.url, args.ca, request, server_name=args.server_name)))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("golden")
    g.add_argument("--url", required=True)
    g.add_argument("--ca", required=True)
    g.add_argument("--dir", required=True)
    g.add_argument("--update", action="store_true")
    m = sub.add_parser("malformed")
    m.add_argument("--url", required=True)
    m.add_argument("--ca", required=True)
    r = sub.add_parser("rotated")
    r.add_argument("--url", required=True)
    r.add_argument("--ca", required=True)
    r.add_argument("--timeout", type=float, default=20)
    v = sub.add_parser("validate")
    v.add_argument("files", nargs="+")
    p = sub.add_parser("post")
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--object", required=True)
    p.add_argument("--operation", default="CREATE")
    p.add_argument("--namespace", default="shop")
    p.add_argument("--version", default="v1")
    p.add_argument("--server-name")
    args = parser.parse_args()
    commands = {"golden": golden, "malformed": malformed, "rotated": rotated, "validate": validate_files, "post": post_object}
    commands[args.command](args)


if __name__ == "__main__":
    main()
