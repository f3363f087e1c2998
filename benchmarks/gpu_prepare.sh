#!/usr/bin/env bash
# Prepare, on the development machine, what benchmarks/gpu_h200.py needs on a lent H200 machine that
# has PyTorch, transformers, peft, scipy, pandas, yaml and tqdm but not MONAI, nibabel or the
# packaged text encoder, and cannot download anything:
#
#   .whl/                 MONAI and nibabel wheels for its Python 3.12
#   .gpu_assets/minilm16/ all-MiniLM-L6-v2 (the default text encoder) saved in float16 (~45 MB; the
#                         float32 package is 88 MB, over the 64 MiB a device call may carry)
#
# Both are git-ignored (.git/info/exclude). Then, in ONE device call (about 8 minutes; see
# docs/PERFORMANCE.md, section GPU):
#
#   run(carry=[".whl", ".gpu_assets"], timeout_s=560, command=
#     "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#      && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
#      && python3 benchmarks/gpu_h200.py --text-encoder .gpu_assets/minilm16 --budget-s 400 2>&1 | tee $OUT/log;
#      cp benchmarks/results/gpu_h200.json docs/PERFORMANCE.md $OUT/")
#
# and copy the two files back into benchmarks/results/ and docs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
for entry in /.whl/ /.gpu_assets/; do
    grep -qxF "$entry" .git/info/exclude 2>/dev/null || echo "$entry" >> "$(git rev-parse --git-path info/exclude)"
done
mkdir -p .whl .gpu_assets
if [ "${SKIP_WHEELS:-0}" != "1" ]; then
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "monai==1.6.1" "nibabel>=5.0"
fi
"$PY" - <<'EOF'
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from duplus.text.encoder import resolve_model_path

src = Path(resolve_model_path("default")[0])
dst = Path(".gpu_assets/minilm16")
if dst.exists():
    shutil.rmtree(dst)
AutoModel.from_pretrained(src, dtype=torch.float16).save_pretrained(dst)
AutoTokenizer.from_pretrained(src).save_pretrained(dst)
if (src / "1_Pooling").is_dir():  # mean pooling, as the packaged model
    shutil.copytree(src / "1_Pooling", dst / "1_Pooling")
config = json.loads((dst / "config.json").read_text())
for key in ("dtype", "torch_dtype"):  # float16 on disk, loaded as float32
    if key in config:
        config[key] = "float32"
(dst / "config.json").write_text(json.dumps(config, indent=2))
size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file()) / 2**20
print(f"wrote {dst} ({size:.0f} MB) from {src}")
EOF
du -sh .whl .gpu_assets
