"""A headless Chromium driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``).

Why not Playwright or Selenium: both need a browser download or a driver binary this
machine cannot fetch; Debian's ``chromium`` speaks the DevTools protocol itself. With
``--remote-debugging-pipe`` it reads NUL-terminated JSON commands on fd 3 and answers on fd
4, so the standard library is enough (no WebSocket client).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]


class Browser:
    """One Chromium process and one page; ``call`` sends a command and waits for its answer."""

    def __init__(self, profile: Path) -> None:
        path = shutil.which("chromium") or shutil.which("chromium-browser")
        if path is None:
            raise FileNotFoundError("chromium not installed (.ci/run installs it: apt-get install chromium)")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: fd 3 reads our commands, fd 4 writes the answers
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)  # first out of the way of 3 and 4
            os.dup2(a, 3)
            os.dup2(b, 4)

        # pass_fds keeps 3 and 4 open: the child closes the other descriptors after fds() ran
        self.proc = subprocess.Popen([path, *FLAGS, f"--user-data-dir={profile}", "about:blank"], preexec_fn=fds,
                                     pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next = 0
        self.session: str | None = None

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        return self._next

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, page: bool = True) -> dict[str, Any]:
        wanted = self._send(method, params, self.session if page else None)
        while True:
            message = self._receive()
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": url}, page=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, page=False)["sessionId"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll a page expression until it is truthy: the page's own state, there is no event to await here."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError as exc:  # the page not there yet (no body while it loads): try again
                value, last_error = None, exc
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed falsy for {timeout} s (last error: {last_error})")
            time.sleep(0.1)

    def key(self, key: str) -> None:
        """One key press as a person types it (keydown with its text, then keyup)."""
        text = key if len(key) == 1 else ("\r" if key == "Enter" else "")
        down: dict[str, Any] = {"type": "keyDown", "key": key}
        if text:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", down)
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": key})

    def close(self) -> None:
        try:
            self.call("Browser.close", page=False)
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
