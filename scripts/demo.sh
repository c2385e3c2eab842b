#!/usr/bin/env bash
# `make demo`: the main job end to end. Assembles a small PACS-like export under demo_out/
# (symlinks to the shared real data, which is only read, plus a BraTS case written as a DICOM
# MR study), runs `monai-tumor batch` with both bundles, and prints the path of index.html.
# Without the shared data it generates a synthetic CT export with a seed CSV instead.
# Rerunning reuses finished series (resumable batch), so a second `make demo` is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA="${MONAI_TUMOR_DATA:-$(cd .. && pwd)/shared/data}"
OUT="$(mkdir -p "${DEMO_OUT:-demo_out}" && cd "${DEMO_OUT:-demo_out}" && pwd)"
EXPORT="$OUT/export"
mkdir -p "$EXPORT"

link_series() {  # link_series SRC_DIR DEST_DIR: symlink every file of SRC_DIR into DEST_DIR
  mkdir -p "$2"
  for f in "$1"/*; do ln -sfn "$f" "$2/$(basename "$f")"; done
}

if [ -f "$DATA/README.md" ]; then
  echo "[demo] assembling an export from $DATA (symlinks; the shared data is only read)"
  link_series "$DATA/lung1/LUNG1-001/image" "$EXPORT/LUNG1/ct"
  link_series "$DATA/lung1/LUNG1-001/mask_rtstruct" "$EXPORT/LUNG1/rtstruct"
  link_series "$DATA/sts/STS_001/CT/dicom/image" "$EXPORT/STS1/ct"
  link_series "$DATA/sts/STS_001/CT/dicom/mask" "$EXPORT/STS1/rtstruct"
  echo "[demo] writing BraTS case pat0003 as a DICOM MR study (FLAIR, T1c + distractors)"
  if [ ! -f "$OUT/.brats_written" ]; then
    PYTHONPATH=. "$BIN/python" - "$DATA" "$EXPORT/BRATS" <<'EOF'
import sys
from pathlib import Path

from tests.support.brats_dicom import brats_case_dir, write_brats_study

write_brats_study(brats_case_dir(Path(sys.argv[1]), "brats_2013_pat0003_1"), sys.argv[2])
EOF
    touch "$OUT/.brats_written"
  fi
  SEEDS=(--seeds-from-rtstruct)
  BUNDLES=(lung_nodule_ct brats_glioma_mri)
else
  echo "[demo] no real data at $DATA (set MONAI_TUMOR_DATA); generating a synthetic CT export"
  PYTHONPATH=. "$BIN/python" - "$EXPORT/SYNTH" "$OUT/seeds.csv" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import pydicom
from tests.support.dicom_factory import lps_affine, write_series

folder, seeds = Path(sys.argv[1]), Path(sys.argv[2])
shape, spacing, step = (96, 96, 40), 0.7, 1.25
i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
x, y, z = (i - 48) * spacing, (j - 48) * spacing, (k - 20) * step
volume = np.where(x**2 + y**2 < 30**2, -800, -1000)  # a lung-like cylinder in air
volume[(x - 8) ** 2 + (y + 5) ** 2 + z**2 < 6**2] = 30  # a 12 mm nodule
aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(spacing, spacing), slice_step=step)
for path in write_series(folder, (volume + 1024).astype(np.int16), affine_lps=aff, intercepts=-1024):
    ds = pydicom.dcmread(path)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = "synthetic chest CT"
    ds.save_as(path)
centre = aff[:3, 3] + aff[:3, :3] @ np.array([48 + 8 / spacing, 48 - 5 / spacing, 20.0])
seeds.write_text("x,y,z,label\n" + ",".join(f"{v:.2f}" for v in centre) + ",nodule\n")
EOF
  SEEDS=(--seeds "$OUT/seeds.csv")
  BUNDLES=(lung_nodule_ct)
fi

REPORTS=()
for bundle in "${BUNDLES[@]}"; do
  echo "[demo] monai-tumor batch $EXPORT --bundle bundles/$bundle --out $OUT/$bundle"
  args=("$EXPORT" --bundle "bundles/$bundle" --out "$OUT/$bundle" --device auto --workers 2)
  [ "$bundle" = lung_nodule_ct ] && args+=("${SEEDS[@]}")
  "$BIN/monai-tumor" batch "${args[@]}"
  REPORTS+=("$bundle")
done

# One page linking the per-bundle reports.
{
  echo "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>monai-tumor demo</title></head><body>"
  echo "<h1>monai-tumor demo</h1><ul>"
  for bundle in "${REPORTS[@]}"; do echo "<li><a href='$bundle/index.html'>$bundle</a></li>"; done
  echo "</ul></body></html>"
} >"$OUT/index.html.tmp" && mv "$OUT/index.html.tmp" "$OUT/index.html"
echo "[demo] done. Open:"
echo "$OUT/index.html"
