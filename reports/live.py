"""
A study as it runs, from its files alone (no Ray connection): reports.serve answers /STUDY/live.json with
live_state() and serves /STUDY/live, a page that polls it and updates in place.

Where each piece comes from:
  study.json        the metric, the planned trials (trials_planned: names, count, how many run at once), ended
  .lock             the driver's lock (study/lock.py), renewed every 20 s while the driver runs
  trials/NAME/      trial_config.json (written when the trial starts), config.json (planned_steps),
                    metrics.jsonl (a line per eval: the learning curve)
  tune*/experiment_state-*.json   Tune's own record of each trial's status (failed, stopped early)

A trial is done when its last eval reached its planned steps; failed or stopped early when Tune says so; running
when it has started and the driver still holds the lock; unfinished when the driver is gone. A study whose driver
is gone without writing its end time is shown as stalled, with the age of its last write: never as running.
"""

import json
import math
import time
from pathlib import Path

import pandas as pd
import plotly.offline

from reports.collect import _inside, read_json, read_jsonl, redact, scrub, to_jsonable, trial_row

POLL_S = 3  # how often the page asks for live.json
STATUSES = ("done", "running", "pending", "failed", "stopped early", "unfinished")


def driver_state(study_dir: Path) -> tuple[bool, str]:
    """(whether a driver holds the study's lock now, why not when it does not)."""
    from study.lock import LOCK_FILE, holder_alive

    holder = read_json(study_dir / LOCK_FILE, [])
    if not isinstance(holder, dict):
        return False, "no driver holds the study's lock"
    if holder_alive(holder):
        return True, ""
    return False, f"its driver (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) is gone"


def tune_statuses(study_dir: Path) -> dict:
    """trial name -> Tune's status (PENDING, RUNNING, TERMINATED, ERROR) from each experiment's newest saved
    state; a later experiment (tune_2, a resume's added seeds) overrides an earlier one."""
    out = {}
    exps = sorted(
        (d for d in study_dir.glob("tune*") if d.is_dir()),
        key=lambda d: int(d.name.split("_")[1]) if d.name.split("_")[-1].isdigit() else 1,
    )
    for exp in exps:
        states = sorted(exp.glob("experiment_state-*.json"))
        if not states:
            continue
        try:
            data = json.loads(states[-1].read_text(encoding="utf-8"))["trial_data"]
            for state, _ in data:
                s = json.loads(state)
                name = s.get("custom_trial_name") or s.get("relative_logdir")
                if name:
                    out[str(name)] = str(s.get("status"))
        except (OSError, ValueError, KeyError, TypeError):  # being rewritten, or a format we do not know
            continue
    return out


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _planned(meta: dict) -> tuple[list[str] | None, int | None, int | None]:
    """(planned trial names, planned count, trials at once) from study.json; older files lack trials_planned and
    give what their registered plan implies (arms x seeds)."""
    p = meta.get("trials_planned")
    if isinstance(p, dict):
        names = [str(n) for n in p["names"]] if isinstance(p.get("names"), list) else None
        count = p.get("count") if isinstance(p.get("count"), int) else (len(names) if names else None)
        at_once = p.get("at_once") if isinstance(p.get("at_once"), int) and p["at_once"] > 0 else None
        return names, count, at_once
    plan = meta.get("plan") if isinstance(meta.get("plan"), dict) else {}
    arms, seeds = plan.get("arms"), plan.get("seeds")
    if isinstance(arms, list) and isinstance(seeds, int):
        return None, len(arms) * seeds, None
    return None, None, None


def _arms(rows: list[dict], meta: dict, study_dir: Path) -> dict:
    """trial name -> arm: the trials table's variant where the runner wrote one, else the study's own naming."""
    try:
        table = pd.read_parquet(study_dir / "trials.parquet", columns=["trial", "variant"])
        return dict(zip(table["trial"].astype(str), table["variant"].astype(str)))
    except Exception:
        pass
    try:
        from study.api import name_arms

        named = name_arms(pd.DataFrame(rows), meta)
        return dict(zip(named["trial"].astype(str), named["variant"].astype(str))) if "variant" in named else {}
    except Exception:  # an unknown study (a file's): the config columns say which arm it is
        return {}


def live_state(study_dir, now: float | None = None) -> dict:
    """Everything the live page shows, as plain JSON values."""
    d = Path(study_dir)
    now = time.time() if now is None else now
    warnings = []
    meta = read_json(d / "study.json", warnings)
    meta = scrub(meta) if isinstance(meta, dict) else {}
    metric = str(meta.get("metric") or "val_bpb")
    lower_better = str(meta.get("mode", "min")).lower() not in ("max", "maximize")
    names, count, at_once = _planned(meta)
    alive, why = driver_state(d)
    tune = tune_statuses(d)

    dirs = (
        sorted(p for p in (d / "trials").glob("*") if p.is_dir() and _inside(d, p)) if (d / "trials").is_dir() else []
    )
    rows = [trial_row(p, warnings) for p in dirs]
    arms = _arms(rows, meta, d)
    configs = [read_json(p / "trial_config.json", warnings) for p in dirs]
    configs = [scrub(c) if isinstance(c, dict) else {} for c in configs]
    # the keys that tell the trials apart (the study's axes and seeds): the rest is the same in every trial
    keys = sorted({k for c in configs for k in c if len({json.dumps(x.get(k), default=str) for x in configs}) > 1})

    trials, curves, durations, last_write = [], {}, [], _mtime(d / "study.json") or 0.0
    for p, row, config in zip(dirs, rows, configs):
        metrics = read_jsonl(p / "metrics.jsonl", warnings) if (p / "metrics.jsonl").exists() else []
        points = [
            (m["step"], m[metric])
            for m in metrics
            if isinstance(m.get("step"), (int, float)) and isinstance(m.get(metric), (int, float))
        ]
        points = [(s, v) for s, v in points if math.isfinite(v)]
        step = max((m["step"] for m in metrics if isinstance(m.get("step"), (int, float))), default=None)
        planned = row.get("planned_steps") if isinstance(row.get("planned_steps"), (int, float)) else None
        started, updated = _mtime(p / "trial_config.json"), _mtime(p / "metrics.jsonl")
        last_write = max([last_write] + [t for t in (started, updated) if t])
        if planned is not None and step is not None and step >= planned:
            status = "done"
        elif tune.get(p.name) == "ERROR":
            status = "failed"
        elif tune.get(p.name) == "TERMINATED":
            status = "stopped early"
        else:
            status = "running" if alive and not meta.get("ended") else "unfinished"
        if status in ("done", "failed", "stopped early") and started and updated and updated >= started:
            durations.append(updated - started)
        values = [v for _, v in points]
        best = (min(values) if lower_better else max(values)) if values else None
        trials.append(
            dict(
                name=p.name,
                arm=arms.get(p.name, ""),
                config={k: config.get(k) for k in keys},
                status=status,
                step=step,
                planned_steps=planned,
                latest=values[-1] if values else None,
                best=best,
                seconds=None if not started else (now if status == "running" else updated or now) - started,
            )
        )
        curves[p.name] = dict(steps=[s for s, _ in points], values=values)

    if names is not None:  # the plan's order (arm by arm, seed by seed); a trial it does not name goes last
        order = {n: i for i, n in enumerate(names)}
        trials.sort(key=lambda t: order.get(t["name"], len(order)))
    seen = {t["name"] for t in trials}
    pending = [n for n in names if n not in seen] if names is not None else []
    for n in pending:
        trials.append(dict(name=n, arm="", config={}, status="pending", step=None, planned_steps=None))
    counts = {s: sum(t["status"] == s for t in trials) for s in STATUSES}
    if names is None and count is not None:  # a search: the draws not started yet have no names
        counts["pending"] = max(0, count - len(trials))
    total = len(trials) + (counts["pending"] if names is None else 0)

    if meta.get("ended"):
        state = "interrupted" if meta.get("interrupted") else "finished"
        text = f"{state} {meta['ended']}"
    elif alive:
        state, text = "running", "running"
    else:
        age = max(0.0, now - last_write)
        state = "stalled"
        text = f"stalled: no update for {age / 60:.0f} min; {why}"
    # the terminal's ETA (study.service.Progress): the mean finished trial's time x the trials left / trials at once
    left = counts["running"] + counts["pending"]
    at_once = at_once or max(1, counts["running"])
    eta = sum(durations) / len(durations) * left / at_once if durations and left and state == "running" else None
    return to_jsonable(
        dict(
            study=str(meta.get("study") or d.name),
            metric=metric,
            mode="min" if lower_better else "max",
            state=state,
            state_text=text,
            counts=counts,
            total=total,
            at_once=at_once,
            eta_s=eta,
            last_update_s=max(0.0, now - last_write),
            trials=trials,
            curves=curves,
            warnings=warnings,
        )
    )


def live_json(study_dir) -> bytes:
    """live.json's body; < > & as JSON escapes, so no byte of it reads as markup wherever it lands."""
    text = redact(json.dumps(live_state(study_dir), allow_nan=False))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#eceff1;padding:16px 28px}header h1{margin:0 0 6px;font-size:22px}
header p{margin:2px 0;color:#b0bec5}main{padding:8px 28px 40px;max-width:1600px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}th,td{border:1px solid #e3e3e3;padding:3px 7px;
text-align:left}thead th{background:#f2f4f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.running{background:#fff8e1}.mark{color:#e65100;font-weight:600}#state.stalled{color:#b71c1c}
#curves{height:420px;background:#fff;border:1px solid #e0e0e0}#finished a{color:#00695c}
"""

# Every value from live.json reaches the page as textContent or a plotly trace: never as HTML.
JS = """
(function(){
  var POLL = POLL_MS, plotted = false;
  function el(tag, text, cls){ var e = document.createElement(tag); if (text !== undefined && text !== null)
    e.textContent = String(text); if (cls) e.className = cls; return e; }
  function num(v){ return (v === null || v === undefined) ? '' : (Math.abs(v) >= 1000 || Number.isInteger(v)) ?
    String(v) : v.toPrecision(5); }
  function dur(s){ s = Math.round(s); var m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? h + 'h' + String(m % 60).padStart(2, '0') + 'm' : m + 'm' + String(s % 60).padStart(2, '0') + 's'; }
  function plain(s){ return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'); }
  function render(st){
    document.getElementById('state').textContent = st.state_text;
    document.getElementById('state').className = st.state;
    var c = st.counts, parts = [c.done + ' done', c.running + ' running', c.pending + ' pending'];
    if (c.failed) parts.push(c.failed + ' failed'); if (c['stopped early']) parts.push(c['stopped early'] + ' stopped early');
    if (c.unfinished) parts.push(c.unfinished + ' unfinished');
    var line = parts.join(', ') + ' of ' + st.total + ' (' + st.at_once + ' at once)';
    line += st.eta_s !== null ? '; ETA ' + dur(st.eta_s) : (st.state === 'running' ? '; ETA after the first trial ends' : '');
    document.getElementById('progress').textContent = line;
    document.getElementById('metric').textContent = st.metric + ' (' + (st.mode === 'min' ? 'lower' : 'higher') + ' is better)';
    var body = document.createElement('tbody');
    st.trials.forEach(function(t){
      var tr = el('tr', null, t.status === 'running' ? 'running' : '');
      tr.setAttribute('data-trial', t.name); tr.setAttribute('data-status', t.status);
      tr.appendChild(el('td', t.name));
      tr.appendChild(el('td', t.arm));
      tr.appendChild(el('td', Object.keys(t.config || {}).map(function(k){ return k + '=' + JSON.stringify(t.config[k]); }).join(' ')));
      var s = el('td', null, 'status');
      if (t.status === 'running') s.appendChild(el('span', '\\u25B6 ', 'mark'));
      s.appendChild(el('span', t.status));
      tr.appendChild(s);
      tr.appendChild(el('td', t.step === null || t.step === undefined ? '' : t.step + (t.planned_steps ? ' / ' + t.planned_steps : ''), 'num'));
      tr.appendChild(el('td', num(t.latest), 'num'));
      tr.appendChild(el('td', num(t.best), 'num'));
      tr.appendChild(el('td', t.seconds === null || t.seconds === undefined ? '' : dur(t.seconds), 'num'));
      body.appendChild(tr);
    });
    var table = document.getElementById('trials'); table.replaceChild(body, table.tBodies[0]);
    var traces = Object.keys(st.curves).filter(function(n){ return st.curves[n].steps.length; }).map(function(n){
      return {x: st.curves[n].steps, y: st.curves[n].values, mode: 'lines+markers', type: 'scatter', name: plain(n)}; });
    var layout = {margin: {t: 20}, xaxis: {title: {text: 'step'}}, yaxis: {title: {text: plain(st.metric)}},
      legend: {orientation: 'h'}};
    if (traces.length || plotted) { Plotly.react('curves', traces, layout, {displayModeBar: false}); plotted = true; }
    var fin = document.getElementById('finished'); fin.textContent = '';
    if (st.state === 'finished' || st.state === 'interrupted') {
      fin.appendChild(el('span', 'The study has ' + (st.state === 'finished' ? 'finished' : 'been interrupted') + ': '));
      var a = el('a', 'the full report'); a.href = 'report.html'; fin.appendChild(a);
    }
    return st.state === 'running';
  }
  function poll(){
    fetch('live.json', {cache: 'no-store'}).then(function(r){ if (!r.ok) throw new Error('live.json: HTTP ' + r.status);
      return r.json(); }).then(function(st){
      document.getElementById('error').textContent = '';
      document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      // a stalled study may come back (a --resume); a finished one is checked rarely
      setTimeout(poll, render(st) ? POLL : st.state === 'stalled' ? POLL * 5 : POLL * 20);
    }).catch(function(e){ document.getElementById('error').textContent = String(e); setTimeout(poll, POLL * 2); });
  }
  poll();
})();
"""


def live_page(name: str) -> str:
    """The page is the same for every study but for its title; everything else arrives through live.json."""
    import html

    title = html.escape(name, quote=True)
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>",
            f"<title>{title}: live</title><style>{CSS}</style>",
            f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>",
            f"<header><h1>Study {title}, live</h1><p>status <b id='state'>loading</b> &middot; <span id='progress'>",
            "</span></p><p><span id='updated'></span> &middot; every trial's <span id='metric'></span>, ",
            f"asked for every {POLL_S} s from the study's files</p></header><main>",
            "<p id='finished'></p><p id='error' style='color:#b71c1c'></p><div id='curves'></div>",
            "<table id='trials'><thead><tr><th>trial</th><th>arm</th><th>config</th><th>status</th><th>step</th>",
            "<th>latest</th><th>best</th><th>time</th></tr></thead><tbody></tbody></table>",
            f"</main><script>{JS.replace('POLL_MS', str(POLL_S * 1000))}</script></body></html>",
        ]
    )
