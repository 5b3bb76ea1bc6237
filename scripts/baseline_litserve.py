"""The peer users would pick today: LitServe serving the same model.pt, written the way its docs show.

A `LitAPI` with setup / decode_request / batch / predict / unbatch / encode_response, a form upload
(field "file"), torchvision's transforms, the TorchScript model frozen with
`torch.jit.optimize_for_inference` (as our TorchScript archives serve it), `LitServer` on the CPU
with N workers. scripts/bench.py starts it with two worker/thread/batch configs and keeps the best.

  python scripts/baseline_litserve.py --model model.pt --topk 3 --workers 2 --threads 1 --batch 4 --port 8000
  curl -F file=@photo.jpg http://127.0.0.1:8000/predict
"""

from __future__ import annotations

import argparse
import warnings

import litserve as ls
import torch
from PIL import Image
from torchvision import transforms

warnings.filterwarnings("ignore", category=FutureWarning)


class ImageClassifierAPI(ls.LitAPI):
    def __init__(self, model_file: str, topk: int, threads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_file, self.topk, self.threads = model_file, topk, threads

    def setup(self, device):
        torch.set_num_threads(self.threads)
        self.model = torch.jit.optimize_for_inference(torch.jit.load(self.model_file).eval())
        self.transform = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def decode_request(self, request):
        return self.transform(Image.open(request["file"].file).convert("RGB"))

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        with torch.inference_mode():
            return torch.softmax(self.model(x), dim=1)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        values, indices = output.topk(self.topk)
        return {
            "predictions": [{"index": int(i), "probability": float(p)} for p, i in zip(values, indices, strict=True)]
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="TorchScript model file")
    p.add_argument("--topk", type=int, required=True)
    p.add_argument("--workers", type=int, default=1, help="inference worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per worker")
    p.add_argument("--batch", type=int, default=1, help="max_batch_size")
    p.add_argument("--batch-timeout", type=float, default=0.001, help="seconds to wait for a batch to fill")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    api = ImageClassifierAPI(
        args.model, args.topk, args.threads, max_batch_size=args.batch, batch_timeout=args.batch_timeout
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, timeout=30)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
