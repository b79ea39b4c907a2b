"""A proxyless gRPC client for the end-to-end tests.

Dials xds:///TARGET through gRPC's own xDS resolver (bootstrap file named by
GRPC_XDS_BOOTSTRAP) and calls /dromon.test.Echo/Call every INTERVAL seconds,
printing the answering backend's id, or `error <code>`, one line per call,
until killed.

usage: client.py TARGET [INTERVAL]
"""
import sys
import time

import grpc


def main() -> None:
    target = sys.argv[1]
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    channel = grpc.insecure_channel(f"xds:///{target}")
    call = channel.unary_unary("/dromon.test.Echo/Call")
    while True:
        try:
            reply = call(b"hello", timeout=2)
            print(reply.decode(), flush=True)
        except grpc.RpcError as err:
            print(f"error {err.code().name} {err.details()}", flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main()
