"""The HTML report in a real headless Chromium (Debian's ``chromium`` package), with the network disabled.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no chromedriver, no
WebDriver client, no port. Every console message, uncaught exception and network request of the page is
collected. Skipped when no Chromium is installed (``apt-get install -y chromium``).

Run as a script to write a screenshot of a report: ``python tests/outputs/test_report_chromium.py REPORT.html
OUT.png``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("WHYSPIKE_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class Chromium:
    """A headless Chromium with its network cut off, and one page driven over the DevTools protocol."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-default-browser-check", "--disable-extensions",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--disable-breakpad",
             "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--remote-debugging-pipe"]

    def __init__(self, binary: str, width: int = 1280, height: int = 1600):
        self.profile = tempfile.mkdtemp(prefix="whyspike-chromium-")
        to_r, self._to_w = os.pipe()  # we write, Chromium reads on fd 3
        self._from_r, from_w = os.pipe()  # Chromium writes on fd 4, we read

        def fds():  # runs in the child before exec: the protocol's pipes on fds 3 and 4
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, *self.FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._next = 0
        self._replies: dict[int, dict] = {}
        self._cv = threading.Condition()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        targets = self.call("Target.getTargets", timeout=30)["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cv:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cv.notify_all()

    def call(self, method: str, session: bool = False, timeout: float = 20, **params) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        with self._cv:
            while msg["id"] not in self._replies:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"chromium did not answer {method} (exit code {self.proc.poll()})")
                self._cv.wait(left)
            reply = self._replies.pop(msg["id"])
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str, ready: str = "true", timeout: float = 30) -> None:
        """Navigate and wait for the load event and then for ``ready`` (a JS expression) to be true."""
        start = len(self.events)
        self.call("Page.navigate", session=True, url=url)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(e.get("method") == "Page.loadEventFired" for e in self.events[start:]) and self.js(ready):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not become ready ({ready})")

    def since(self, mark: int) -> list[dict]:
        return self.events[mark:]

    def screenshot(self, path: Path, height: int | None = None) -> bytes:
        if height:
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=height,
                      deviceScaleFactor=1, mobile=False)
        png = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        Path(path).write_bytes(png)
        return png

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_w, self._from_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def problems(events: list[dict]) -> list[str]:
    """Console errors/warnings, uncaught exceptions and browser log errors among the events."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails'].get('exception', {})}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
        elif m == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
            out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def requests(events: list[dict]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


# ------------------------------------------------------------------------------------------------------- tests

BINARY = find_chromium()
pytestmark = pytest.mark.skipif(BINARY is None, reason="Chromium is not installed (Debian: apt-get install -y "
                                "chromium); the headless browser test of the HTML report needs it")


@pytest.fixture(scope="module")
def browser():
    b = Chromium(BINARY)
    yield b
    b.close()


def test_report_of_a_recorded_run_renders_offline_without_errors(browser, tmp_path, step_decay_run):
    import whyspike
    from whyspike.diagnosis import diagnose
    from whyspike.outputs.report import write_report

    step_decay_run(tmp_path / "run")
    run = whyspike.load_run(tmp_path / "run")
    d = diagnose(run)
    spike = next(s for s in d.spikes if s.metric == "val_accuracy")
    assert spike.causes[0].id == "lr_schedule"  # the scenario: a real jump with a known cause
    report = write_report(tmp_path / "report.html", run, d)

    mark = len(browser.events)
    browser.open(report.as_uri(), "document.documentElement.getAttribute('data-ws-ready') === '1'")
    time.sleep(0.3)  # let late console messages arrive
    events = browser.since(mark)
    assert problems(events) == []
    urls = requests(events)
    assert urls == [report.as_uri()], f"the report requested more than itself: {urls}"
    assert browser.js("document.documentElement.getAttribute('data-ws-errors')") == "0"

    # the spike markers: one per marked jump, on the main figure's panels, at the jump's position
    markers = browser.js("""Array.from(document.querySelectorAll('.ws-spike-marker')).map(m => ({
        metric: m.dataset.metric, at: +m.dataset.at, shown: m.style.display !== 'none',
        left: parseFloat(m.style.left), width: m.parentNode.clientWidth}))""")
    assert any(m["metric"] == "val_accuracy" and m["at"] == spike.at and m["shown"] for m in markers)
    epoch_markers = [m for m in markers if m["metric"] in {s.metric for s in d.spikes if s.axis == "epoch"}]
    assert len(epoch_markers) == sum(s.axis == "epoch" for s in d.spikes)
    va = next(m for m in markers if m["metric"] == "val_accuracy")
    # epoch 0..29 across the plot width: the marker sits at (at - 0) / 29 of it
    assert va["left"] == pytest.approx(va["width"] * spike.at / 29, abs=2)
    # the verdict, one sentence per jump
    verdicts = browser.js("Array.from(document.querySelectorAll('li.ws-verdict')).map(e => e.textContent)")
    assert len(verdicts) == len(d.spikes)
    assert any(v.startswith("val_accuracy jumped up") and "learning-rate schedule" in v for v in verdicts)
    # the charts were drawn: canvases of a real size, and the LR panel under the curves on the same x range
    sizes = browser.js("Array.from(document.querySelectorAll('.ws-main canvas')).map(c => [c.width, c.height])")
    assert len(sizes) >= 3 and all(w > 300 and h > 80 for w, h in sizes)

    # hover: the legend shows the values under the mouse, on every panel of the figure (cursors are synced)
    box = browser.js("""(() => { const r = window.whyspikeReport.groups['g-epoch'][0].over.getBoundingClientRect();
        return [r.left, r.top, r.width, r.height]; })()""")
    x, y = box[0] + box[2] * 20 / 29, box[1] + box[3] / 2  # over epoch 20
    browser.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
    time.sleep(0.2)
    legends = browser.js("""window.whyspikeReport.groups['g-epoch'].map(u =>
        Array.from(u.root.querySelectorAll('.u-legend .u-value')).map(e => e.textContent))""")
    assert all(vals[0] == "20" for vals in legends), legends  # the x value under the mouse, on every panel
    lr_values = legends[-1][1:]
    assert lr_values == ["0.05"], legends  # the LR at epoch 20 (0.5 x 0.1), as the panel's legend shows it

    # zoom into the jump from the verdict: every panel of the figure follows
    ranges = browser.js("""(async () => {
        document.querySelector('li.ws-verdict[data-metric="val_accuracy"] .ws-zoom').click();
        await new Promise(r => setTimeout(r, 100));  // uPlot applies scale changes in a micro-task
        const g = window.whyspikeReport.groups['g-epoch'];
        return g.map(u => [u.scales.x.min, u.scales.x.max]); })()""")
    assert len(ranges) >= 3 and all(r == ranges[0] for r in ranges)
    assert ranges[0][0] <= spike.at <= ranges[0][1] and ranges[0][1] - ranges[0][0] < 29

    # the PNG export of the main figure
    url = browser.js("window.whyspikeReport.groupPng('g-epoch')")
    assert url.startswith("data:image/png;base64,")
    w, h = png_size(base64.b64decode(url.split(",", 1)[1]))
    assert w > 600 and h > 500
    assert problems(browser.since(mark)) == []

    browser.js("document.querySelector('.ws-main .ws-reset').click()")
    time.sleep(0.1)
    shot = browser.screenshot(tmp_path / "report.png")
    assert png_size(shot) == (1280, 1600)
    if os.environ.get("WHYSPIKE_SCREENSHOT"):
        shutil.copy(tmp_path / "report.png", os.environ["WHYSPIKE_SCREENSHOT"])


def test_hostile_names_probes_and_landscape_render_in_the_browser(browser, tmp_path, make_run, make_probes,
                                                                make_landscape):
    from whyspike.diagnosis import diagnose
    from whyspike.outputs.report import write_report

    name = "val_acc</script><script>window.__pwned=1</script>&\"'<b>"
    run = make_run(tmp_path / "run", metric=name)
    d = diagnose(run)
    assert any(s.metric == name for s in d.spikes)
    report = write_report(tmp_path / "r.html", run, d, probes=make_probes(name), landscape=make_landscape())
    mark = len(browser.events)
    browser.open(report.as_uri(), "document.documentElement.getAttribute('data-ws-ready') === '1'")
    time.sleep(0.3)
    assert problems(browser.since(mark)) == []
    assert requests(browser.since(mark)) == [report.as_uri()]
    assert browser.js("window.__pwned === undefined") is True
    # no element was made from the name: the page's own three scripts only, no <b> in the texts that quote it
    assert browser.js("document.querySelectorAll('script').length") == 3
    assert browser.js("document.querySelectorAll('.ws-verdict b, .card b, .u-legend b, table.probes b').length") == 0
    verdict = browser.js("document.querySelector('li.ws-verdict').textContent")
    assert verdict.startswith(name + " jumped up")
    marker = browser.js("document.querySelector('.ws-spike-marker').dataset.metric")
    assert marker == name
    legend = browser.js("Array.from(document.querySelectorAll('.u-legend .u-label')).map(e => e.textContent)")
    assert name in legend
    # probe chart, landscape charts and the surface heatmap are drawn
    drawn = browser.js("""['probe', 'interpolation', 'curvature'].map(
        id => !!document.querySelector('.ws-chart[data-chart="' + id + '"] canvas'))
        .concat([!!document.querySelector('.ws-heatmap canvas')])""")
    assert drawn == [True, True, True, True]
    # the seed band's legend shows one entry per intervention, not one per run
    shown = browser.js("""Array.from(document.querySelectorAll('.ws-chart[data-chart="probe"] .u-legend .u-series'))
        .filter(r => r.style.display !== 'none').map(r => r.textContent)""")
    assert sum("lr.hold" in s for s in shown) == 1 and sum("lr.shift=+5" in s for s in shown) == 1
    # the heatmap's darkest cell is where the surface has its minimum (viridis: low = dark purple)
    dark = browser.js("""(() => { const c = document.querySelector('.ws-heatmap canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let best = [1e9, 0, 0];
        for (let y = 0; y < c.height; y += 2) for (let x = 0; x < c.width * 0.8; x += 2) {
          const i = 4 * (y * c.width + x), s = d[i] + d[i + 1] + d[i + 2];
          if (d[i] === 68 && d[i + 1] === 1 && d[i + 2] === 84 && s < best[0]) best = [s, x, y]; }
        return [best[1] / c.width, best[2] / c.height]; })()""")
    # the surface's minimum is at x 0.5, y -0.5 of [-1, 1] x [-1, 1], drawn in the plot box (64..670 of 760 px
    # across, 12..396 of 440 down, y upwards): at (64 + 0.75 * 606) / 760 = 0.68 and (12 + 0.75 * 384) / 440 = 0.68;
    # a transposed grid would put it at (0.28, 0.24)
    assert dark == pytest.approx([0.68, 0.68], abs=0.04)


def test_the_network_check_sees_a_request_when_one_is_made(browser, tmp_path):
    """The control: a page that does load a URL is caught by the same collector (so its silence above counts)."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><img src="http://example.invalid/pixel.png"><script>console.error("boom")'
                    "</script>")
    mark = len(browser.events)
    browser.open(page.as_uri())
    time.sleep(0.3)
    events = browser.since(mark)
    assert "http://example.invalid/pixel.png" in requests(events)
    assert any("boom" in p for p in problems(events))


if __name__ == "__main__":  # python tests/outputs/test_report_chromium.py REPORT.html OUT.png [HEIGHT]
    b = Chromium(find_chromium() or sys.exit("no chromium"), height=int(sys.argv[3]) if len(sys.argv) > 3 else 1600)
    try:
        b.open(Path(sys.argv[1]).resolve().as_uri(), "document.documentElement.getAttribute('data-ws-ready') === '1'")
        time.sleep(0.5)
        print("problems:", problems(b.events), "requests:", requests(b.events))
        b.screenshot(Path(sys.argv[2]))
    finally:
        b.close()


def test_a_learning_rate_falling_to_1e_31_renders_without_errors(browser, tmp_path):
    """The seed's Example 1: its LR decays per step to ~1e-31, far below what a default log axis handles."""
    import whyspike
    from whyspike.diagnosis import diagnose
    from whyspike.outputs.report import write_report

    run = whyspike.load_run(Path(__file__).resolve().parents[1] / "data" / "seed" / "ex1_lr_decay.csv")
    assert float(run.series["learning_rate"].y.min()) < 1e-30
    report = write_report(tmp_path / "report.html", run, diagnose(run))
    mark = len(browser.events)
    browser.open(report.as_uri(), "document.documentElement.getAttribute('data-ws-ready') === '1'")
    time.sleep(0.3)
    assert problems(browser.since(mark)) == []
    assert browser.js("document.documentElement.getAttribute('data-ws-errors')") == "0"
    sizes = browser.js("Array.from(document.querySelectorAll('.ws-main canvas')).map(c => [c.width, c.height])")
    assert len(sizes) >= 2 and all(w > 300 and h > 80 for w, h in sizes)
