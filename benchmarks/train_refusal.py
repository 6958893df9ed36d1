"""Train the refusal classifier shipped as services/evaluation/refusal_model.json.

    .venv/bin/python benchmarks/train_refusal.py [--out services/evaluation/refusal_model.json]

Trains on every row of the bundled XSTest v2 dev completions (services/evaluation/data/) plus the templated
answers of `refusal_training.py`, with the default `RefusalTrainConfig`; deterministic, so rerunning it
rewrites the same file (tests/services/evaluation/test_refusal.py checks that). Held-out figures come from
benchmarks/refusal.py, which retrains per fold on training prompts only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignline.services.evaluation.refusal import MODEL_PATH
from alignline.services.evaluation.refusal_training import (RefusalTrainConfig, read_xstest_completions,
                                                            train_refusal_classifier, training_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(MODEL_PATH))
    args = parser.parse_args()
    cfg = RefusalTrainConfig()
    rows = training_rows(read_xstest_completions(), cfg)
    model = train_refusal_classifier(rows, cfg)
    Path(args.out).write_text(json.dumps(model.to_json(), separators=(",", ":")) + "\n")
    print(f"{len(rows)} rows -> {args.out} ({Path(args.out).stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
