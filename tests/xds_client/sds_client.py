"""An SDS client for the end-to-end tests, built on Envoy's own protos (xds-protos).

Opens one StreamSecrets stream to TARGET (`unix:/path` or `host:port`), asks for
the secrets NAMES (comma-separated), ACKs every response, and prints one JSON line
per response: its version and nonce and, per secret, what OpenSSL reads in it (the
certificate's serial and whether the private key is the certificate's; the number
of trusted roots). Stops after seeing WANT distinct certificates in `default` (or
WANT responses when `default` is not asked for), or when TIMEOUT seconds pass
(exit 1).

usage: sds_client.py TARGET WANT TIMEOUT [NAMES]
"""
import json
import queue
import subprocess
import sys

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def openssl(args, data):
    out = subprocess.run(["openssl", *args], input=data, capture_output=True, check=True)
    return out.stdout.decode().strip()


def describe(secret):
    if secret.HasField("tls_certificate"):
        chain = secret.tls_certificate.certificate_chain.inline_bytes
        key = secret.tls_certificate.private_key.inline_bytes
        serial = openssl(["x509", "-noout", "-serial"], chain).removeprefix("serial=")
        cert_pub = openssl(["x509", "-noout", "-pubkey"], chain)
        key_pub = openssl(["pkey", "-pubout"], key)
        return {
            "serial": serial.lower(),
            "key_matches": cert_pub == key_pub,
            "chain_certs": chain.count(b"BEGIN CERTIFICATE"),
        }
    if secret.HasField("validation_context"):
        roots = secret.validation_context.trusted_ca.inline_bytes
        openssl(["x509", "-noout", "-subject"], roots)
        return {"roots": roots.count(b"BEGIN CERTIFICATE")}
    return {"unknown": True}


def main() -> None:
    target, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else ["default", "ROOTCA"]
    node = base_pb2.Node(id="sds-e2e~127.0.0.1~e2e.default~default.svc.cluster.local", cluster="e2e")
    requests = queue.Queue()
    requests.put(discovery_pb2.DiscoveryRequest(node=node, type_url=SECRET_TYPE, resource_names=names))

    def outgoing():
        while True:
            req = requests.get()
            if req is None:
                return
            yield req

    # gRPC's default HTTP/2 authority for a Unix socket target is refused by the
    # server's HTTP/2 layer as malformed; Envoy sends its cluster name instead.
    channel = grpc.insecure_channel(target, options=[("grpc.default_authority", "localhost")])
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
    seen_certs = []
    responses = 0
    try:
        for resp in stub.StreamSecrets(outgoing(), timeout=timeout):
            responses += 1
            secrets = {}
            for res in resp.resources:
                if res.type_url != SECRET_TYPE:
                    raise SystemExit(f"unexpected type {res.type_url}")
                secret = secret_pb2.Secret()
                res.Unpack(secret)
                secrets[secret.name] = describe(secret)
            cert = secrets.get("default", {}).get("serial")
            if cert and cert not in seen_certs:
                seen_certs.append(cert)
            print(json.dumps({
                "version": resp.version_info,
                "nonce": resp.nonce,
                "type_url": resp.type_url,
                "secrets": secrets,
            }), flush=True)
            # ACK: the version and nonce just received.
            requests.put(discovery_pb2.DiscoveryRequest(
                node=node, type_url=SECRET_TYPE, resource_names=names,
                version_info=resp.version_info, response_nonce=resp.nonce))
            done = len(seen_certs) >= want if "default" in names else responses >= want
            if done:
                break
    except grpc.RpcError as err:
        print(json.dumps({"error": err.code().name, "details": err.details()}), flush=True)
        sys.exit(1)
    finally:
        requests.put(None)
        channel.close()


if __name__ == "__main__":
    main()
