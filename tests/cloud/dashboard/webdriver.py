"""Drive headless Chromium through chromedriver's W3C WebDriver HTTP API (httpx, no selenium).

``Browser.start(workdir)`` launches ``chromedriver`` on a free loopback port and opens one
headless Chromium session with the flags the project uses in CI; ``browser.logs()`` returns
the console and network messages the page produced since the last call.
"""
from __future__ import annotations

import base64
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.brokers import free_port, wait_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1360,900"]


class WebDriverError(RuntimeError):
    pass


@dataclass
class Browser:
    proc: subprocess.Popen
    http: httpx.Client
    session: str

    @classmethod
    def start(cls, workdir: Path) -> "Browser":
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1",
                                 f"--log-path={workdir / 'chromedriver.log'}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, 15)
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM,
                                       "args": FLAGS + [f"--user-data-dir={workdir / 'profile'}"]},
                "goog:loggingPrefs": {"browser": "ALL"},
            }}}
            r = http.post("/session", json=caps)
            if r.status_code != 200:
                raise WebDriverError(f"chromedriver refused the session: {r.text[:500]}")
            return cls(proc, http, r.json()["value"]["sessionId"])
        except BaseException:
            proc.terminate()
            proc.wait(10)
            raise

    def _cmd(self, method: str, path: str, payload: dict | None = None):
        r = self.http.request(method, f"/session/{self.session}{path}", json=payload)
        value = r.json().get("value")
        if r.status_code != 200:
            raise WebDriverError(f"{method} {path}: {value.get('error') if isinstance(value, dict) else value}: "
                                 f"{(value or {}).get('message', '')[:400] if isinstance(value, dict) else ''}")
        return value

    def get(self, url: str) -> None:
        self._cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self._cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float = 15.0, what: str = "condition"):
        """Poll ``script`` (a JS expression body that returns a value) until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what}")
            time.sleep(0.05)

    def logs(self) -> list[dict]:
        """Console and network log entries since the last call ({level, message, source})."""
        return self._cmd("POST", "/se/log", {"type": "browser"})

    def cdp(self, cmd: str, **params):
        """A Chrome DevTools Protocol command through chromedriver."""
        return self._cmd("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page, not only the viewport."""
        size = self.cdp("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
        shot = self.cdp("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def quit(self) -> None:
        try:
            self.http.delete(f"/session/{self.session}")
        except httpx.HTTPError:
            pass
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
