"""
Build one study's report:

    python -m reports.build results/STUDY [--no-png]

writes results/STUDY/report.html (self-contained, works offline from file://),
results.json (the machine-readable summary) and NAME.png for the main figures.
build_report() is the one report builder: study.run calls it at the end of a study (study.service.build_report
only logs and keeps a failure from losing the results), study.api's StudyResult.report() in a notebook.
"""

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from reports.analyse import analyse_study
from reports.collect import StudyError, load_study, redact, scrub, to_jsonable
from reports.figures import build_figures, write_pngs
from reports.html import render
from trainables.storage import write_atomic

NO_PNG = {"curves"}  # per-trial lines: for clicking through, not for a README


def results_json(study, res, pngs):
    trials = scrub(study.trials.to_dict(orient="records"))
    out = {
        **res,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "hypothesis": study.meta.get("hypothesis"),
        "started": study.meta.get("started"),
        "ended": study.meta.get("ended"),
        "git_commit": study.meta.get("git_commit"),
        "pngs": [p.name for p in pngs],
        "trials": trials,
    }
    return json.dumps(to_jsonable(out), indent=1)


def build_report(study_dir, png=True):
    """Collect, analyse, draw, write. Returns {"html": path, "json": path, "pngs": [paths], "seconds": float}.

    Raises StudyError when the directory holds no study (a user error, not a bug).
    """
    t0 = time.perf_counter()
    study = load_study(study_dir)
    res = analyse_study(study)
    figs = build_figures(study, res)
    pngs = write_pngs({k: f for k, f in figs.items() if k not in NO_PNG}, study.dir) if png else []
    # redact last, over the finished text: whatever path a credential took, it stops here
    write_atomic(study.dir / "results.json", redact(results_json(study, res, pngs)))
    write_atomic(study.dir / "report.html", redact(render(study, res, figs, pngs)))
    return {
        "html": study.dir / "report.html",
        "json": study.dir / "results.json",
        "pngs": pngs,
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m reports.build", description="Write report.html, results.json and PNGs for one study."
    )
    p.add_argument("study_dir", help="a study's results directory, e.g. results/nanohead_grid")
    p.add_argument("--no-png", action="store_true", help="skip the static PNGs (they need kaleido and Chromium)")
    args = p.parse_args(argv)
    try:
        out = build_report(args.study_dir, png=not args.no_png)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a read-only results directory
        print(f"error: cannot write the report: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out['html']}, {out['json'].name} and {len(out['pngs'])} PNGs in {out['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
