"""A gRPC backend for the end-to-end tests: answers /dromon.test.Echo/Call with its id.

usage: backend.py HOST:PORT ID
"""
import sys
from concurrent import futures

import grpc


def main() -> None:
    addr, ident = sys.argv[1], sys.argv[2].encode()
    handler = grpc.method_handlers_generic_handler(
        "dromon.test.Echo",
        {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: ident)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(addr)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
