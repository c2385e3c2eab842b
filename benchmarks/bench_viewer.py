"""Benchmark: writing the 3D viewer's display copy (``display.js`` + ``viewer.html``).

Cases: the LUNG1-001 chest CT (512 x 512 x 134 int16 HU, its GTV from the RTSTRUCT as the
mask) and a BraTS FLAIR (240 x 240 x 155 float, z-scored, its tumour labels as the mask).

Compared in the same run, per case:

* the default (volumes above 2**24 voxels subsampled; gzip level 6),
* gzip level 1 (fastest) and 9 (smallest),
* no subsampling (the whole grid, gzip level 6): what the default saves on a large CT.

Reported: median and min wall time of ``write_viewer`` over N runs (after a warm-up run),
the size written (both files) and the display grid.

Usage::

    .venv/bin/python benchmarks/bench_viewer.py [--runs 5]

Writes ``benchmarks/results/viewer.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import data_label, run_info  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402

VARIANTS: dict[str, dict[str, int]] = {
    "default (subsampled above 2^24 voxels, gzip 6)": {},
    "gzip level 1": {"compresslevel": 1},
    "gzip level 9": {"compresslevel": 9},
    "no subsampling (gzip 6)": {"max_voxels": 1 << 40},
}


def _lung1() -> tuple[Any, Any, str]:
    from monai_tumor.ingest.groundtruth import rtstruct_to_mask
    from monai_tumor.ingest.reader import read_series

    case = data_root() / "lung1" / "LUNG1-001"
    image = read_series(case / "image")
    (rtstruct,) = sorted((case / "mask_rtstruct").iterdir())
    mask = rtstruct_to_mask(rtstruct, image, roi=re.compile(r"(?i)^gtv"))
    return image, mask, data_label(case, data_root())


def _brats() -> tuple[Any, Any, str]:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.data import MetaTensor

    case = data_root() / "brats" / "train" / "brats_2013_pat0005_1"
    flair = nib.Nifti1Image.from_filename(case / "Flair_subtrMeanDivStd.nii.gz")
    labels = nib.Nifti1Image.from_filename(case / "OTMultiClass.nii.gz")
    affine = torch.as_tensor(flair.affine, dtype=torch.float64)
    image = MetaTensor(
        torch.as_tensor(np.asarray(flair.dataobj, dtype=np.float32))[None],
        affine=affine,
        meta={"Modality": "MR"},
    )
    mask = MetaTensor(
        torch.as_tensor(np.rint(np.asarray(labels.dataobj)).astype(np.uint8))[None],
        affine=affine,
    )
    return image, mask, data_label(case, data_root())


def _lesions(mask: Any, image: Any) -> list[dict[str, Any]]:
    from monai_tumor.postprocess.lesions import measure_lesions

    binary = (mask > 0).to(mask.dtype)
    return [les.to_dict() for les in measure_lesions(binary, image)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from monai_tumor.export.seg import SegmentSpec
    from monai_tumor.report.viewer import ViewerOptions, write_viewer

    results: list[dict[str, Any]] = []
    for loader in (_lung1, _brats):
        image, mask, label = loader()
        lesions = _lesions(mask, image)
        segments = [SegmentSpec(int(v), f"label {int(v)}") for v in mask.unique() if int(v)]
        for variant, fields in VARIANTS.items():
            options = ViewerOptions(**fields)  # type: ignore[arg-type]
            times = []
            with tempfile.TemporaryDirectory() as tmp:
                for run in range(args.runs + 1):
                    start = time.perf_counter()
                    files = write_viewer(
                        Path(tmp) / "series",
                        image=image,
                        mask=mask,
                        lesions=lesions,
                        segments=segments,
                        run_dir=tmp,
                        title="bench",
                        options=options,
                    )
                    if run:  # the first run warms imports and caches
                        times.append(time.perf_counter() - start)
            results.append(
                {
                    "case": label,
                    "shape": list(image.shape[1:]),
                    "variant": variant,
                    "median_s": statistics.median(times),
                    "min_s": min(times),
                    "bytes": files.bytes,
                    "display_shape": list(files.shape),
                    "steps": list(files.steps),
                }
            )
            print(f"{label} {variant}: {statistics.median(times):.2f} s", file=sys.stderr)

    out = Path(__file__).resolve().parent / "results" / "viewer.json"
    payload = {**run_info(), "runs": args.runs, "results": results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| case | variant | display grid | median s | min s | MB written |")
    print("|---|---|---|---|---|---|")
    for r in results:
        grid = " x ".join(str(n) for n in r["display_shape"])
        print(
            f"| {r['case']} | {r['variant']} | {grid} | {r['median_s']:.2f} | "
            f"{r['min_s']:.2f} | {r['bytes'] / 1e6:.1f} |"
        )


if __name__ == "__main__":
    main()
