#!/usr/bin/env bash
# `make demo`: the main job end to end on a default input.
# Until the batch pipeline lands, the demo scans the shared real data (read in place, never
# written) into an index under demo_out/, then converts real series to NIfTI with sidecars.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA="${MONAI_TUMOR_DATA:-$(cd .. && pwd)/shared/data}"
OUT="${DEMO_OUT:-demo_out}"
mkdir -p "$OUT"
if [ ! -d "$DATA" ]; then
  echo "[demo] no real data at $DATA (set MONAI_TUMOR_DATA); nothing to do" >&2
  exit 1
fi
echo "[demo] scanning $DATA (headers only) -> $OUT/index.sqlite"
"$BIN/monai-tumor" scan "$DATA" --index "$OUT/index.sqlite"
for series in lung1/LUNG1-001/image sts/STS_001/CT/dicom/image sts/STS_001/MR_T1/dicom/image ct_jpeg2000/dicom; do
  name="$(echo "$series" | tr '/' '_')"
  "$BIN/monai-tumor" convert "$DATA/$series" "$OUT/nifti/$name.nii.gz"
done
echo "[demo] done: NIfTI + JSON sidecars in $OUT/nifti"
