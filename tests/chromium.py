"""Real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

No Playwright or Selenium: the browser is started with ``--remote-debugging-port=0``, the port
read from ``DevToolsActivePort`` in its profile directory, and the protocol spoken over
aiohttp's websocket client. Clicks are real mouse events at an element's centre. Every page
error (an uncaught exception, a CSP violation, a JavaScript dialog such as an injected
``alert``) is recorded so tests can assert there was none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-port=0",
)


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.problems: list[str] = []  # page errors, CSP violations, dialogs
        self._tasks: set[asyncio.Future[dict[str, Any]]] = set()
        self._reader = asyncio.create_task(self._read())

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self._ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, timeout=15)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self._event(data)

    def _event(self, data: dict[str, Any]) -> None:
        method, params = data.get("method"), data.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.problems.append(f"exception: {params['exceptionDetails']}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            text = params["entry"].get("text", "")
            if "favicon" not in text:  # the only request the page does not answer
                self.problems.append(f"console: {text}")
        elif method == "Page.javascriptDialogOpening":
            self.problems.append(f"dialog: {params.get('type')} {params.get('message')!r}")
            # Dismiss it, or the page would hang; the test fails on ``problems`` anyway.
            task = asyncio.ensure_future(
                self.send(
                    "Page.handleJavaScriptDialog", {"accept": True}, session=data.get("sessionId")
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def new_tab(self, *, width: int = 1360, height: int = 900) -> Tab:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        tab = Tab(self, attached["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            await tab.send(f"{domain}.enable")
        await tab.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return tab

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close")
        self._reader.cancel()
        await self._ws.close()


class Tab:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, *, within: float = 10.0) -> Any:
        deadline = time.monotonic() + within
        guarded = f"(() => {{ try {{ return ({expression}); }} catch {{ return false; }} }})()"
        while True:
            value = await self.evaluate(guarded)  # mid-navigation there may be no document
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {expression}")
            await asyncio.sleep(0.05)

    async def goto(self, url: str, *, ready: str = "document.readyState === 'complete'") -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for(ready)

    async def click(self, selector: str) -> None:
        """A real left click (mouse events) at the centre of the element."""
        x, y = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                el.scrollIntoView({{block: "center"}});
                const r = el.getBoundingClientRect();
                return [r.x + r.width / 2, r.y + r.height / 2];
            }})()"""
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    async def screenshot(self, path: Path, *, dark: bool = False) -> bytes:
        scheme = "dark" if dark else "light"
        await self.send(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(shot["data"])
        await asyncio.to_thread(path.write_bytes, data)
        return data


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    """A headless Chromium for the duration of the block (its own profile directory)."""
    log = await asyncio.to_thread(open, profile.parent / "chromium.log", "wb")
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    session = aiohttp.ClientSession()
    browser: Browser | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start; see {log.name}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        browser = Browser(ws)
        yield browser
    finally:
        if browser is not None:
            await browser.close()
        await session.close()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=5)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
