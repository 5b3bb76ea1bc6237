"""The gRPC doors: TorchServe's gRPC APIs (inference, management) and the Open Inference Protocol's, served
by translating each call into the same call over HTTP through the front (service/doors/front.py).

Why not TorchServe's own gRPC ports: its Java frontend reads every gRPC message whole into memory (and
keeps copies on its heap: two calls of 41 MiB ran a 256 MiB heap out) before anything is checked, with
no bound on how many at once, and nginx cannot admit gRPC calls by size (it streams gRPC bodies
unbuffered, and a gRPC message states no Content-Length). Going through the
HTTP door, a gRPC call is an HTTP body with a length: the front's size limit, size classes and
immediate refusals apply to it exactly as to any upload, so a burst over gRPC is bounded like one over
HTTP. The gateway spools each message to disk as it arrives and admits whole messages by the same size
classes (h2_door.py), so its own memory is bounded too; refusals are immediate RESOURCE_EXHAUSTED. It
also answers what TorchServe's gRPC does not: the handler's status as a gRPC status, images in OIP
`raw_input_contents` (tritonclient's way), model metadata with tensors.
"""
