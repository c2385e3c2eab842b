"""Entry point of a fine-tuning process: ``python -m monai_tumor.service.train_worker JOB``.

``JOB`` is the ``job.json`` the server wrote (bundle, pairs, starting weights, output
folder); the result (validation metric before and after) goes to ``result.json`` beside it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from monai_tumor.export.atomic import atomic_write_json
from monai_tumor.training import finetune_bundle

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run the job named by ``argv[0]``; return the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    job_file = Path(argv[0])
    job = json.loads(job_file.read_text("utf-8"))
    result = finetune_bundle(
        job["bundle"],
        train_pairs=job["train_pairs"],
        val_pairs=job["val_pairs"],
        init_weights=job["init_weights"],
        output_dir=job["output_dir"],
        max_epochs=int(job["max_epochs"]),
        overrides=job.get("overrides", {}),
    )
    atomic_write_json(
        job_file.parent / "result.json",
        {
            "metric_name": result.metric_name,
            "baseline": result.baseline,
            "best": result.best,
            "per_epoch": list(result.per_epoch),
            "weights": str(result.weights),
        },
    )
    logging.getLogger(__name__).info(
        "%s: baseline %.4f, best %.4f", result.metric_name, result.baseline, result.best
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
