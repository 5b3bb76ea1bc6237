#!/usr/bin/env bash
# The curl examples of the README and docs/API.md, run as they are by tests/test_reliability.py.
# KEY_FILE: the server's key file (var/key_file.json for `make run`/`make serve`);
# URL: the inference address; PHOTO: a picture to classify.
set -euo pipefail
KEY_FILE=${KEY_FILE:-var/key_file.json}
URL=${URL:-http://127.0.0.1:8080}
PHOTO=${PHOTO:-photo.jpg}
TOKEN=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['inference']['key'])" "$KEY_FILE")

# Upload the file as the body (-T sends it as it is, never form-encoded): top 3 classes.
curl -sS -w '\n' -H "Authorization: Bearer $TOKEN" -T "$PHOTO" "$URL/predictions/resnet18"
# Ask for 5 classes with the X-TopK header.
curl -sS -w '\n' -H "Authorization: Bearer $TOKEN" -H "X-TopK: 5" -T "$PHOTO" "$URL/predictions/resnet18"
# --data-binary needs an explicit Content-Type: curl's default (form-urlencoded) gets a 500 from TorchServe.
curl -sS -w '\n' -H "Authorization: Bearer $TOKEN" -H "Content-Type: image/jpeg" --data-binary "@$PHOTO" \
  "$URL/invocations?model_name=resnet18&topk=5"
# A multipart form upload, as browsers send it.
curl -sS -w '\n' -H "Authorization: Bearer $TOKEN" -F "data=@$PHOTO" "$URL/predictions/resnet18"
# Why did it say that: the same answer plus an occlusion map of the top class (base64 PNG overlay and grid).
curl -sS -w '\n' -H "Authorization: Bearer $TOKEN" -T "$PHOTO" "$URL/explanations/resnet18"
