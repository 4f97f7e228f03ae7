"""Run one benchmark against two source trees in alternating runs, and compare them run by run.

    python -m benchmarks.auth.alternate --before /tmp/kp-before/src --after /tmp/kp-after/src \
        --runs 4 [--json-out FILE] -- benchmarks.auth.inprocess --rounds 10

Each run is ``python -m MODULE ARGS`` with one tree first on ``PYTHONPATH`` (so ``import keyplane``
picks it, and so does every server process the benchmark starts), the trees taking turns and
changing which goes first from pair to pair (B A A B B A ...), so that a drift of a shared
machine's speed falls on both alike. The benchmark must print one JSON object last on stdout.
Prints, for every numeric figure, the median over the runs of each tree, and the median of the
ratios after/before of the runs taken as pairs (which a drift between pairs does not move).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _run(tree: str, module: str, args: list[str], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, *filter(None, [os.environ.get("PYTHONPATH")])])}
    check = subprocess.run(
        [sys.executable, "-c", "import keyplane; print(keyplane.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if not Path(check.stdout.strip()).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"keyplane comes from {check.stdout.strip()}, not from {tree}")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{module} on {tree} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = proc.stdout
    start = out.rfind("\n{")
    doc: dict[str, Any] = json.loads(out[start + 1 if start >= 0 else 0 :])
    doc["_seconds"] = round(time.monotonic() - t0, 1)
    return doc


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[prefix + k] = float(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="The src/ directory of the older tree.")
    ap.add_argument("--after", required=True, help="The src/ directory of the newer tree.")
    ap.add_argument("--runs", type=int, default=4, help="Runs of each tree.")
    ap.add_argument("--timeout", type=float, default=900.0, help="Per run, in seconds.")
    ap.add_argument("--json-out", default=None, help="Also write every run's output here.")
    ap.add_argument("module")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args

    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    trees = {"before": a.before, "after": a.after}
    for i in range(a.runs):
        order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
        for name in order:
            doc = _run(trees[name], a.module, args, a.timeout)
            runs[name].append(doc)
            print(f"run {i + 1} {name}: {json.dumps(doc)}", file=sys.stderr, flush=True)

    flat = {name: [_flat(d) for d in docs] for name, docs in runs.items()}
    keys = [k for k in flat["after"][0] if all(k in f for f in flat["before"] + flat["after"])]
    summary: dict[str, Any] = {"module": a.module, "args": args, "runs_each": a.runs}
    for k in keys:
        b = [f[k] for f in flat["before"]]
        af = [f[k] for f in flat["after"]]
        ratios = [y / x for x, y in zip(b, af, strict=True) if x]
        summary[k] = {
            "before": round(statistics.median(b), 3),
            "after": round(statistics.median(af), 3),
            "after_over_before": round(statistics.median(ratios), 3) if ratios else None,
            "before_runs": [round(x, 3) for x in b],
            "after_runs": [round(x, 3) for x in af],
        }
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    # One figure a line: a JSON object, each value on the line of its key.
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in summary.items())
    print("{\n" + body + "\n}")


if __name__ == "__main__":
    main()
