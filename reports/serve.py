"""
Browse every study's report:

    python -m reports.serve [RESULTS_DIR or URI] [--host 127.0.0.1] [--port 8000]

The index lists the studies under RESULTS_DIR; a study's report is built when it is
missing or older than its trials (so a running study shows its latest state).
Only report files are served (report.html, results.json, trials.csv, study.json, *.png),
never other files from the results directory. /STUDY/live shows a study as it runs: it polls
/STUDY/live.json, computed from the study's files (reports/live.py), and updates in place.
"""

import argparse
import html
import json
import math
import mimetypes
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd

from reports.build import build_report
from reports.collect import StudyError, redact
from reports.live import driver_state, live_json, live_page
from trainables.storage import is_uri, pull_changed

SERVED = {"report.html", "results.json", "trials.csv", "study.json"}
LIVE = {"live", "live.json"}  # computed from the study's files on each request (reports/live.py)
INPUTS = ("trials.parquet", "trials.csv", "study.json", "optuna.db")  # a report older than these is stale


def esc(s):
    return html.escape(str(s), quote=True)


def find_studies(results_dir):
    """Subdirectories that look like studies, newest first."""
    dirs = [
        p
        for p in Path(results_dir).iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and any((p / f).exists() for f in ("study.json", "trials.parquet", "trials.csv"))
    ]
    return sorted(dirs, key=lambda p: max((p / f).stat().st_mtime for f in INPUTS if (p / f).exists()), reverse=True)


def study_row(d):
    """What the index shows for one study; unreadable pieces become blanks, not errors."""
    row = {
        "dir": d.name,
        "study": d.name,
        "family": "",
        "profile": "",
        "started": "",
        "ended": "",
        "done": "",
        "failed": "",
        "total": "",
        "best": "",
        "live": False,
    }
    try:
        meta = json.loads((d / "study.json").read_text())
        row.update({k: meta.get(k) or "" for k in ("study", "family", "profile", "started", "ended")})
        row["live"] = not meta.get("ended") and driver_state(d)[0]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        if (d / "trials.parquet").exists():
            t = pd.read_parquet(d / "trials.parquet")
        else:
            t = pd.read_csv(d / "trials.csv")
        status = t["status"].astype(str).str.lower() if "status" in t else pd.Series(["done"] * len(t))
        row.update(total=len(t), done=int((status == "done").sum()), failed=int((status == "failed").sum()))
        if "val_bpb" in t and t["val_bpb"].notna().any():
            row["best"] = f"{pd.to_numeric(t['val_bpb'], errors='coerce').min():.4f}"
    except Exception:
        pass
    return row


def index_page(results_dir, shown=None):
    rows = [study_row(d) for d in find_studies(results_dir)]
    head = ["study", "family", "profile", "started", "ended", "done", "failed", "total", "best val_bpb", ""]
    body = []
    for r in rows:
        link = urllib.parse.quote(r["dir"]) + "/report.html"
        live = urllib.parse.quote(r["dir"]) + "/live"
        ended = r["ended"] or ("running" if r["live"] else "stalled or cut short")
        body.append(
            "<tr>"
            + f"<td><a href='{esc(link)}'>{esc(r['study'])}</a> <a href='{esc(live)}'>"
            + ("<b>live</b>" if r["live"] else "live")
            + "</a></td>"
            + "".join(
                f"<td>{esc(v)}</td>"
                for v in (r["family"], r["profile"], r["started"], ended, r["done"], r["failed"], r["total"], r["best"])
            )
            + f"<td><a href='{esc(urllib.parse.quote(r['dir']) + '/results.json')}'>results.json</a></td></tr>"
        )
    table = (
        (
            "<table><thead><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in head)
            + "</tr></thead><tbody>"
            + "".join(body)
            + "</tbody></table>"
        )
        if body
        else "<p>No studies here yet.</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>studies</title><style>"
        "body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
        "th,td{border:1px solid #ddd;padding:4px 10px;text-align:left}th{background:#f2f4f5}</style></head><body>"
        f"<h1>Studies in {esc(shown or Path(results_dir).resolve())}</h1>{table}"
        "<p style='color:#777'>A report is built when it is opened, if it is missing or older than its study's trials.</p>"
        "</body></html>"
    )


def _ended(study_dir):
    try:
        return bool(json.loads((study_dir / "study.json").read_text()).get("ended"))
    except (OSError, ValueError, AttributeError):
        return False


def is_stale(study_dir):
    report = study_dir / "report.html"
    if not report.exists():
        return True
    inputs = [(study_dir / f).stat().st_mtime for f in INPUTS if (study_dir / f).exists()]
    return bool(inputs) and max(inputs) > report.stat().st_mtime


def _shown(rel: str) -> bool:
    """The files of a results URI the index, the reports and the live view read: a study's own files, its trials'
    small files and Tune's saved state; never checkpoints, code snapshots, Ray Train's or wandb's folders."""
    parts = rel.split("/")
    if len(parts) == 2:  # STUDY/study.json, trials.parquet, .lock, report.html, ...
        return True
    if len(parts) == 3 and parts[1].startswith("tune"):
        return parts[2].startswith("experiment_state-")
    return len(parts) == 4 and parts[1] == "trials"  # STUDY/trials/NAME/metrics.jsonl, config.json, ...


class Staged:
    """A results URI (s3://..., gs://...) read through a local copy of the files the pages need, refreshed at
    most once a second: only the files that changed are fetched again. Reports are built into the copy."""

    def __init__(self, uri: str):
        self.uri, self.local = uri, Path(tempfile.mkdtemp(prefix="nanostudies-serve-"))
        self.seen, self.when, self.lock = {}, -math.inf, threading.Lock()

    def refresh(self):
        with self.lock:
            if time.monotonic() - self.when >= 1.0:
                self.seen = pull_changed(self.uri, self.local, self.seen, keep=_shown)
                self.when = time.monotonic()


class Handler(BaseHTTPRequestHandler):
    results_dir = Path("results")  # set per server by make_server
    staged: Staged | None = None  # with a results URI: results_dir is its local copy
    build_lock = threading.Lock()  # one build at a time: they share two CPU cores with training

    def do_GET(self):
        if self.staged:
            try:
                self.staged.refresh()
            except OSError as e:  # the store is unreachable for now: say so, the page's next poll retries
                return self.send(503, esc(f"cannot read {self.staged.uri}: {e}").encode(), "text/plain; charset=utf-8")
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            return self.send(
                200,
                redact(index_page(self.results_dir, self.staged and self.staged.uri)).encode(),
                "text/html; charset=utf-8",
            )
        parts = path.strip("/").split("/")
        if (
            len(parts) == 1
            and parts[0]
            and (self.results_dir / parts[0]).is_dir()
            and self.inside(self.results_dir / parts[0])
        ):
            running = not _ended(self.results_dir / parts[0]) and driver_state(self.results_dir / parts[0])[0]
            return self.redirect(f"/{urllib.parse.quote(parts[0])}/{'live' if running else 'report.html'}")
        if len(parts) != 2:
            return self.send(404, b"not found", "text/plain")
        study, name = parts
        study_dir = self.results_dir / study
        # names from the URL are data: one plain directory under results, one plain file inside it
        if (
            study in ("", ".", "..")
            or study.startswith(".")
            or not study_dir.is_dir()
            or not (
                name in SERVED
                or name in LIVE
                or (name.endswith(".png") and "/" not in name and not name.startswith("."))
            )
            or not self.inside(study_dir)
        ):
            return self.send(404, b"not found", "text/plain")
        if name == "live":  # computed, like live.json: neither is a file of the study's
            return self.send(200, redact(live_page(study)).encode(), "text/html; charset=utf-8")
        if name == "live.json":
            return self.send(200, live_json(study_dir), "application/json; charset=utf-8")
        if name == "report.html" and is_stale(study_dir):
            with self.build_lock:
                if is_stale(study_dir):
                    try:
                        build_report(study_dir, png=False)
                    except StudyError as e:
                        return self.send(404, esc(f"no report: {e}").encode(), "text/html; charset=utf-8")
        f = study_dir / name
        if not f.is_file() or not self.inside(f):
            return self.send(404, b"not found", "text/plain")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype == "application/json":
            ctype += "; charset=utf-8"
        self.send(200, f.read_bytes(), ctype)

    def inside(self, path):
        """Whether path, symlinks resolved, lies in the results folder: a link must not serve (or have a report
        built into) a folder or file elsewhere on this machine."""
        return path.resolve().is_relative_to(self.results_dir.resolve())

    def send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        sys.stderr.write(f"reports.serve: {self.address_string()} {format % args}\n")


def make_server(results_dir, host="127.0.0.1", port=8000, quiet=False):
    """A ThreadingHTTPServer over RESULTS_DIR, a folder or a storage URI (port 0: any free port; see
    server.server_address)."""
    staged = results_dir if isinstance(results_dir, Staged) else None
    if staged is None and is_uri(results_dir):
        staged = Staged(str(results_dir))
        staged.refresh()  # a URI that cannot be read fails here, before the server listens
    attrs = {"results_dir": staged.local if staged else Path(results_dir), "staged": staged}
    if quiet:
        attrs["log_message"] = lambda self, *a: None
    handler = type("StudyHandler", (Handler,), attrs)
    return ThreadingHTTPServer((host, port), handler)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m reports.serve", description="Serve an index of study reports.")
    p.add_argument(
        "results_dir", nargs="?", default="results", help="directory holding one folder per study (default: results)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    args = p.parse_args(argv)
    uri = is_uri(args.results_dir)
    if not uri and not Path(args.results_dir).is_dir():
        print(f"error: no results directory: {args.results_dir}", file=sys.stderr)
        return 2
    try:
        staged = Staged(args.results_dir) if uri else None
        if staged:
            staged.refresh()
    except (OSError, ValueError) as e:  # an unknown scheme, no bucket, an unreachable store
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: cannot read {args.results_dir}: {first}", file=sys.stderr)
        return 2
    try:
        server = make_server(staged or args.results_dir, args.host, args.port)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    shown = args.results_dir if uri else Path(args.results_dir).resolve()
    print(f"serving {shown} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
