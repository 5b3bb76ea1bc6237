"""The baseline a user would otherwise pick: a minimal Flask app as typical tutorials write it.

One process (Flask's threaded development server), per-request PIL decode and torchvision
transforms, a `torch.jit` model with PyTorch's default threads, JSON with jsonify. Nothing tuned:
this is what scripts/bench.py compares TorchServe against.

  python scripts/baseline_flask.py --model model.pt --topk 3 --port 5000
  curl -T photo.jpg http://127.0.0.1:5000/predict
"""

from __future__ import annotations

import argparse
import io
import warnings

import torch
from flask import Flask, jsonify, request
from PIL import Image
from torchvision import transforms

warnings.filterwarnings("ignore", category=FutureWarning)

app = Flask(__name__)
model = None
topk = 0  # answers per request: --topk sets it
transform = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)


@app.route("/ping")
def ping():
    return jsonify(status="Healthy")


@app.route("/predict", methods=["POST", "PUT"])
def predict():
    image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
    batch = transform(image).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model(batch), dim=1)[0]
    values, indices = probabilities.topk(topk)
    return jsonify(
        predictions=[{"index": int(i), "probability": float(p)} for p, i in zip(values, indices, strict=True)]
    )


def main() -> None:
    global model, topk
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="TorchScript model file")
    p.add_argument("--topk", type=int, required=True, help="answers per request (the bench passes the handler's)")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args()
    topk = args.topk
    model = torch.jit.load(args.model)
    model.eval()
    app.run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
