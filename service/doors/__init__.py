"""The bounded doors before TorchServe, in the image and under `make run`: the nginx front for
HTTP, the gRPC gateway, OIP metadata, and the memory budget that sizes them."""
