#!/usr/bin/env bash
# The README's "Quick start" and "Calling the API" commands, run as they are by tests/test_readme.py
# against a real server. KEY_FILE, URL and MANAGEMENT point them at another server than `make run`'s.
set -euo pipefail
cd "$(dirname "$0")/.."  # .venv and var/ are the checkout's, as in the README
KEY_FILE=${KEY_FILE:-var/key_file.json} URL=${URL:-http://127.0.0.1:8080}
MANAGEMENT=${MANAGEMENT:-http://127.0.0.1:8081}

# Quick start: a sample photo that ships inside matplotlib, the inference key, the answer.
PHOTO=$(.venv/bin/python -c "import matplotlib; print(matplotlib.get_data_path())")/sample_data/grace_hopper.jpg
TOKEN=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['inference']['key'])" "$KEY_FILE")
curl -sS -w '\n' -H "Authorization: Bearer $TOKEN" -T "$PHOTO" "$URL/predictions/resnet18"

# Calling the API: a new inference key from the key file's API key (the old one stops working).
API_KEY=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['API']['key'])" "$KEY_FILE")
curl -sS -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $API_KEY" "$MANAGEMENT/token?type=inference"
TOKEN=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['inference']['key'])" "$KEY_FILE")
curl -sS -w '\n' -H "Authorization: Bearer $TOKEN" -T "$PHOTO" "$URL/predictions/resnet18"  # the new key works
