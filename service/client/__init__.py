"""The API's clients, what an application or the UI runs: HTTP (api), gRPC (grpc_api), uploads."""
