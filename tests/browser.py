"""Open an HTML file in headless Chromium and report what a user's browser would: console errors,
uncaught exceptions, failed or network requests, broken images, and a screenshot.

Talks the Chrome DevTools Protocol (https://chromedevtools.github.io/devtools-protocol/) over
``--remote-debugging-pipe`` (fd 3: commands in, fd 4: replies out, each message NUL-terminated
JSON), so it needs the browser only: no websocket client, no Selenium or Playwright.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    broken_images: int = 0
    images: int = 0
    screenshot: bytes = b""
    evaluated: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return self.console_errors + self.exceptions + self.log_errors


class _Pipe:
    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            for event in self._read(deadline):
                self.events.append(event)
                if event.get("method") == method:
                    return event

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.extend(self._read(deadline))
        except TimeoutError:
            pass

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (status {self.process.poll()})")
                self.buffer += chunk
        *messages, self.buffer = self.buffer.split(b"\0")
        return [json.loads(m) for m in messages if m]


def open_page(
    html_path: Path, chromium: str, width: int = 1280, height: int = 2400, script: str | None = None
) -> PageReport:
    """Load ``html_path``, let it settle, optionally run ``script`` (its value goes to
    ``evaluated["script"]``), and take a full-page screenshot."""
    to_child_read, to_child_write = os.pipe()
    from_child_read, from_child_write = os.pipe()

    def map_fds() -> None:  # in the child: the pipe ends become fds 3 (commands) and 4 (replies)
        high_in, high_out = os.dup(to_child_read), os.dup(from_child_write)
        os.dup2(high_in, 3)
        os.dup2(high_out, 4)

    profile = tempfile.mkdtemp(prefix="report-chromium-")
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--remote-debugging-pipe",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(3, 4),
        preexec_fn=map_fds,
    )
    os.close(to_child_read)
    os.close(from_child_write)
    pipe = _Pipe(process, to_child_write, from_child_read)
    report = PageReport()
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=60)["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.send("Page.navigate", {"url": html_path.resolve().as_uri()}, session=session)
        pipe.wait_for("Page.loadEventFired", timeout=60)
        pipe.drain(0.5)  # late console messages and image decoding
        images = pipe.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify([document.images.length, "
                "Array.from(document.images).filter(i => !i.complete || "
                "i.naturalWidth === 0).length])",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        report.images, report.broken_images = json.loads(images)
        if script is not None:
            value = pipe.send("Runtime.evaluate", {"expression": script, "returnByValue": True}, session=session)
            report.evaluated["script"] = value.get("result", {}).get("value")
            pipe.drain(0.3)
        shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        import base64

        report.screenshot = base64.b64decode(shot["data"])
        pipe.send("Browser.close")
    finally:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(to_child_write)
        os.close(from_child_read)
        shutil.rmtree(profile, ignore_errors=True)
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            report.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            report.exceptions.append(details.get("exception", {}).get("description") or details.get("text", "?"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            report.log_errors.append(params["entry"].get("text", "?"))
        elif method == "Network.requestWillBeSent":
            report.requests.append(params.get("request", {}).get("url", "?"))
    return report
