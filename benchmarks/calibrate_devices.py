"""Derive the GPU device models' GEMM efficiency from ../shared/reference and store it.

Prints the derivation and writes simplan/data/gpu_calibration.json (what simplan.devices reads)
and benchmarks/results/calibrate_devices.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from simplan.calibration import CALIBRATION_FILE, derive_gemm_efficiency
from simplan.devices import get_device
from simplan.io import write_json_atomic


def main() -> int:
    result = derive_gemm_efficiency(get_device("a100-80gb"))
    print(f"{'constant':<18} {'value':>8}  source")
    print(f"{'gemm_efficiency':<18} {result['gemm_efficiency']:>8.4f}  {result['source']}")
    write_json_atomic(result, CALIBRATION_FILE)
    out = Path(__file__).resolve().parent / "results" / "calibrate_devices.json"
    write_json_atomic(result, out)
    print(f"wrote {CALIBRATION_FILE} and {out}")
    json.dumps(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
