"""docs/API.md's gRPC example, run as it is by tests/test_doors.py against a real server.

  .venv/bin/python docs/grpc_example.py PHOTO [PHOTO ...]

Stubs come from the protos inside the installed TorchServe's jar (`make setup` generates them into
service/client/grpc_stubs/); the token is the inference key from var/key_file.json, sent as metadata.
"""

import json
import os
import sys

import grpc

from service.client.grpc_api import bearer, stubs

ADDRESS = os.environ.get("GRPC_ADDRESS", "127.0.0.1:7070")
KEY_FILE = os.environ.get("KEY_FILE", "var/key_file.json")

key = json.load(open(KEY_FILE))["inference"]["key"]
messages, services = stubs("inference")  # TorchServe's InferenceAPIsService
channel = grpc.insecure_channel(ADDRESS, options=[("grpc.max_send_message_length", -1)])
stub = services.InferenceAPIsServiceStub(channel)
photos = sys.argv[1:]

# One image a call: the answer is the same JSON as REST's /predictions.
for photo in photos:
    request = messages.PredictionsRequest(model_name="resnet18", input={"data": open(photo, "rb").read()})
    try:
        reply = stub.Predictions(request, metadata=bearer(key), timeout=30)
        print(photo, json.loads(reply.prediction)["predictions"][0])
    except grpc.RpcError as error:  # e.g. INVALID_ARGUMENT, details = REST's JSON error body
        print(photo, error.code().name, json.loads(error.details())["message"])

# Several images in one call: the Open Inference Protocol's ModelInfer, one BYTES element each, in order.
oip, oip_services = stubs("open_inference_grpc")
tensor = oip.ModelInferRequest.InferInputTensor(
    name="image", datatype="BYTES", shape=[len(photos)],
    contents=oip.InferTensorContents(bytes_contents=[open(p, "rb").read() for p in photos]))
answer = oip_services.GRPCInferenceServiceStub(channel).ModelInfer(
    oip.ModelInferRequest(model_name="resnet18", inputs=[tensor]), metadata=bearer(key), timeout=30)
outputs = {o.name: o for o in answer.outputs}
k = outputs["label"].shape[1]
for i, photo in enumerate(photos):
    labels = outputs["label"].contents.bytes_contents[i * k:(i + 1) * k]
    error = outputs["error"].contents.bytes_contents[i].decode() if "error" in outputs else ""
    print(photo, error or [label.decode() for label in labels])
