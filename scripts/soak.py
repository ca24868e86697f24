"""Soak test: the chaos scenarios of tests/chaos, again and again, for minutes to hours.

Each round runs every chosen scenario once on a fresh pipeline (embedded broker, private Postgres
cluster, private redis-server, real workers: tests/support/chaos.py) with ``--frames`` frames, and
asserts the same invariants as the chaos tests. At the end (or on Ctrl-C) it prints the table
fault | frames sent | stored | lost | duplicated rows | duplicated results | recovery seconds,
one row per scenario run, plus a summary per fault (runs, failures, worst recovery).

Usage (from the repository root)::

    .venv/bin/python scripts/soak.py --minutes 30
    .venv/bin/python scripts/soak.py --minutes 120 --only postgres,broker --frames 200
    .venv/bin/python scripts/soak.py --list

Options: ``--minutes M`` (default 10; a round in progress is finished), ``--only a,b`` (default
all of tests/chaos: poison, forged-update, postgres, broker, redis, worker-kill; soak-only:
broker-mid-batch), ``--frames N`` per scenario
(default 100), ``--outage S`` seconds for the Postgres/broker outages (default 10 / 3),
``--keep DIR`` keeps each run's logs under DIR (default: a temporary folder, removed).
Exit status 1 when any run broke an invariant.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")

from qc_stream.devtools.local import models_dir_without_prompts  # noqa: E402
from tests.support import chaos  # noqa: E402

# The chaos tier's scenarios (the default) and the soak-only ones.
KNOWN = {**chaos.SCENARIOS, **chaos.SOAK_ONLY}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--only", default="", help="comma list of scenarios (default: all)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--outage", type=float, default=None, help="outage seconds (postgres/broker)")
    ap.add_argument("--keep", type=Path, default=None, help="keep logs under this folder")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(chaos.SCENARIOS)
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    if args.minutes <= 0 or args.frames < 4:
        ap.error("--minutes must be > 0 and --frames at least 4")
    args.names = names
    return args


def run_one(name: str, args, workdir: Path):
    scenario = KNOWN[name]
    kwargs = {"n": args.frames}
    if args.outage is not None and "outage_s" in inspect.signature(scenario).parameters:
        kwargs["outage_s"] = args.outage
    p = chaos.Pipeline(workdir)
    try:
        return scenario(p, **kwargs)
    finally:
        p.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, fn in KNOWN.items():
            summary = " ".join((fn.__doc__ or "").split()).split(": ")[0].split(". ")[0]
            print(f"{name:14} {summary}")
        return 0
    base = Path(args.keep or tempfile.mkdtemp(prefix="qc-soak-"))
    base.mkdir(parents=True, exist_ok=True)
    os.environ["QC_MODELS_DIR"] = str(models_dir_without_prompts(base / "models"))
    os.environ["QC_PROMPT_VERSION"] = "untrained"  # the tiny test backbone has no prompt version
    rows: list[tuple[str, chaos.ChaosRow]] = []
    failures: list[str] = []
    deadline = time.monotonic() + args.minutes * 60
    round_no = 0
    try:
        while time.monotonic() < deadline:
            round_no += 1
            for name in args.names:
                workdir = base / f"round{round_no}-{name}"
                workdir.mkdir(parents=True, exist_ok=True)
                started = time.monotonic()
                try:
                    rows.append((name, run_one(name, args, workdir)))
                    status = "ok"
                except Exception as e:  # an invariant broke: record it and go on soaking
                    failures.append(f"round {round_no} {name}: {type(e).__name__}: {e}")
                    (workdir / "failure.txt").write_text(traceback.format_exc())
                    status = "FAILED"
                print(
                    f"round {round_no} {name}: {status} in {time.monotonic() - started:.0f} s",
                    flush=True,
                )
                if time.monotonic() >= deadline:
                    break
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        print()
        print(chaos.format_table([row for _, row in rows]))
        print()
        for name in args.names:
            mine = [row for n, row in rows if n == name]
            failed = sum(f.split(":")[0].endswith(f" {name}") for f in failures)
            worst = max((r.recovery_s for r in mine), default=0.0)
            print(f"{name}: {len(mine)} passed, {failed} failed, worst recovery {worst:.1f} s")
        for f in failures:
            print("FAILED", f.splitlines()[0][:300])
        if args.keep is None and not failures:
            shutil.rmtree(base, ignore_errors=True)
        elif failures:
            print(f"logs: {base}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
