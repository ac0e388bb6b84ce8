"""`python -m bench`: run every benchmark of the pack, print their tables, then one summary of every speed ratio
(min / median / max over the interleaved rounds, the target judged on the median) headed by the host's ComfyUI
version and the machine, so that two hosts' tables can be set side by side.

    python -m bench [--rounds 7] [--only ddim,edict,...] [--skip scorecard,eval_shapes,realscale]
                    [--bench-args "--size 64 --steps 4"] [--json PATH] [--md PATH]

``--json`` writes the ratio benches' settings, per-round times and ratios with the host and machine (the data of a
docs table); ``--md`` the summary table as markdown. ``--bench-args`` is appended to every ratio bench's arguments.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from pathlib import Path

from . import (bench_asyrp, bench_bdia, bench_caso, bench_csds, bench_ddim, bench_doodl, bench_edict, bench_flow,
               bench_stylediffusion, common, eval_shapes, realscale, scorecard)

# name: (main, its own arguments, a ratio bench: takes --rounds / --bench-args)
BENCHES = {
    "scorecard": (scorecard.main, [], False),
    "eval_shapes": (eval_shapes.main, [], False),
    "ddim": (bench_ddim.main, [], True),
    "edict": (bench_edict.main, [], True),
    "edict-sd3": (bench_edict.main, ["--world", "sd3"], True),
    "bdia": (bench_bdia.main, [], True),
    "bdia-sd3": (bench_bdia.main, ["--world", "sd3"], True),
    "asyrp": (bench_asyrp.main, [], True),
    "doodl": (bench_doodl.main, [], True),
    "doodl-sd3": (bench_doodl.main, ["--world", "sd3"], True),
    "flow": (bench_flow.main, [], True),
    "stylediffusion": (bench_stylediffusion.main, [], True),
    "caso": (bench_caso.main, [], True),
    "csds": (bench_csds.main, [], True),
    "realscale": (realscale.main, [], False),  # full-size models: its own --rounds (1), ~14 min a round on 2 cores
}


def summary(reports, version: str, machine: dict, walls: dict | None = None, failed=()) -> str:
    """The summary table (markdown) of some ratio benches' reports."""
    lines = [f"Speed ratios — host ComfyUI {version}; machine: {common.describe_machine(machine)}",
             f"(each ratio one value per interleaved round, the arms back to back, order reversed every other round; "
             f"a target is judged on the median)", ""]
    lines += common.ratio_rows([(r.bench, x) for r in reports for x in r.ratios], bench=True)
    if walls:
        lines.append("")
        lines.append("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
                     + f"; {sum(walls.values()):.0f} s in all")
    for name in failed:
        lines.append(f"FAILED to run: {name}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=common.MIN_ROUNDS,
                    help=f"interleaved rounds of every ratio bench (default {common.MIN_ROUNDS})")
    ap.add_argument("--only", default=None, help=f"a comma list of: {','.join(BENCHES)}")
    ap.add_argument("--skip", default="", help="a comma list of benches to leave out")
    ap.add_argument("--bench-args", default="", help="arguments appended to every ratio bench's (e.g. '--steps 4')")
    ap.add_argument("--json", metavar="PATH", help="write the ratio benches' results, host and machine as JSON")
    ap.add_argument("--md", metavar="PATH", help="write the summary table as markdown")
    a = ap.parse_args(argv)
    names = a.only.split(",") if a.only else list(BENCHES)
    skip = [s for s in a.skip.split(",") if s]
    for n in names + skip:
        if n not in BENCHES:
            ap.error(f"{n!r} is not one of {list(BENCHES)}")
    extra = shlex.split(a.bench_args)
    start = len(common.RUNS)
    walls, failed = {}, []
    for name in names:
        if name in skip:
            continue
        fn, args, ratio_bench = BENCHES[name]
        argv_ = args + (["--rounds", str(a.rounds)] + extra if ratio_bench else [])
        print(f"\n==== {name} {' '.join(argv_)}", flush=True)
        t = time.perf_counter()
        try:
            fn(argv_)
        except Exception:  # one bench failing does not lose the others' figures
            traceback.print_exc()
            failed.append(name)
        walls[name] = time.perf_counter() - t
    reports = common.RUNS[start:]
    text = summary(reports, common.host_version(), common.machine(), walls, failed)
    print("\n" + text)
    if a.json:
        common.write_json(a.json, reports, wall_s=walls, failed=failed)
    if a.md:
        Path(a.md).parent.mkdir(parents=True, exist_ok=True)
        Path(a.md).write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
