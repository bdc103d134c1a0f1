"""
Open a page in headless Chromium and report what a person would see: JS errors, the
rendered DOM, a screenshot. Talks the DevTools protocol over --remote-debugging-pipe
(JSON messages separated by NUL bytes on fds 3 and 4), so it needs no extra package.
"""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium():
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    def __init__(self, binary, width=1280, height=2400):
        self.profile = tempfile.mkdtemp(prefix="reports-chromium-")
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads fd 3
        self._resp_r, resp_w = os.pipe()  # Chromium writes fd 4, we read

        def fds():  # runs in the child: put the pipe ends on 3 and 4, where Chromium expects them
            a, b = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, resp_w))  # first out of the way
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--disable-extensions",
                "--hide-scrollbars",
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
            ],
            preexec_fn=fds,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(resp_w)
        self._buf, self._id, self.events = b"", 0, []
        self.width, self.height = width, height

    def _read(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._resp_r], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._resp_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=None, timeout=30):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)  # console messages, exceptions, load events arrive in between

    def wait_event(self, method, session, since=0, timeout=30):
        """Wait for METHOD from SESSION among the events after index SINCE."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events[since:]):
            self.events.append(self._read(deadline))

    def open(self, url, settle_js="true", timeout=60):
        """Load URL; wait for the load event and until settle_js is true. Returns the page session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=s)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=s,
        )
        since = len(self.events)
        self.send("Page.navigate", {"url": url}, session=s)
        self.wait_event("Page.loadEventFired", s, since, timeout)
        deadline = time.monotonic() + timeout
        while not self.eval(s, settle_js):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never settled: {settle_js}")
            time.sleep(0.1)
        return s

    def eval(self, session, expression):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        return r.get("result", {}).get("value")

    def errors(self):
        """JS exceptions, console.error calls and error-level log entries (e.g. a failed network load)."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(d.get("exception", {}).get("description") or d.get("text"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, session):
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"])

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def image_stats(browser, png):
    """Fraction of non-white pixels and of distinct colours in a PNG, decoded by Chromium on a blank page."""
    s = browser.open("about:blank")
    js = """new Promise(function(resolve){ var img = new Image();
      img.onload = function(){ var c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
        var x = c.getContext('2d'); x.drawImage(img, 0, 0); var d = x.getImageData(0, 0, c.width, c.height).data;
        var n = 0, colours = {}; for (var i = 0; i < d.length; i += 4) {
          if (d[i] < 235 || d[i+1] < 235 || d[i+2] < 235) n++; colours[(d[i] << 16) | (d[i+1] << 8) | d[i+2]] = 1; }
        resolve({width: img.width, height: img.height, nonwhite: n / (d.length / 4), colours: Object.keys(colours).length}); };
      img.onerror = function(){ resolve(null); };
      img.src = 'data:image/png;base64,PNG'; })""".replace("PNG", base64.b64encode(png).decode())
    r = browser.send("Runtime.evaluate", {"expression": js, "awaitPromise": True, "returnByValue": True}, session=s)
    return r["result"]["value"]
