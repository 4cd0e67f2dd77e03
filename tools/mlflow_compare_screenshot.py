"""Screenshot of the MLflow Compare view as a scatter plot (headless Chromium over the DevTools protocol).

    python tools/mlflow_compare_screenshot.py 'http://127.0.0.1:5123/#/compare-runs?runs=[...]&experiments=["1"]' \\
        docs/mlflow-compare-windows.png window_start ndcg_retention

Needs a running `mlflow ui` and Debian's `chromium`. Opens the Scatter Plot tab, picks the X and Y axes by
name, closes the menus and saves a PNG. How docs/mlflow-compare-windows.png was made.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import time
import urllib.request

import websockets

DEBUG_PORT = 9333

OPEN_AXIS = """(() => {{
  const boxes = [...document.querySelectorAll('[role=combobox]')];
  if (boxes.length <= {idx}) return 'only ' + boxes.length + ' axis menus';
  const box = boxes[{idx}];
  box.focus(); box.dispatchEvent(new MouseEvent('mousedown', {{bubbles: true}})); box.click();
  return 'opened';
}})()"""

PICK_OPTION = """(() => {{
  const options = [...document.querySelectorAll('[role=option]')].filter(e => e.offsetParent !== null);
  const match = options.find(e => e.textContent.trim() === {name});
  if (match) {{ match.click(); return 'picked'; }}
  return 'no option ' + {name};
}})()"""

TAB_CENTRE = """(() => {
  const tab = [...document.querySelectorAll('[role=tab]')].find(e => e.textContent.trim() === 'Scatter Plot');
  const r = tab.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
})()"""


class Page:
    """One Chromium tab driven over the DevTools protocol."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.next_id:
                return msg.get("result", msg)

    async def js(self, expr: str):
        out = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return out.get("result", {}).get("value")

    async def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def escape(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)


async def shoot(ws_url: str, url: str, out: str, x_axis: str, y_axis: str) -> None:
    async with websockets.connect(ws_url, max_size=50_000_000) as ws:
        page = Page(ws)
        await page.call("Page.enable")
        await page.call("Page.navigate", url=url)
        await asyncio.sleep(12)                        # the UI loads its runs
        await page.click(*await page.js(TAB_CENTRE))
        await asyncio.sleep(3)
        for idx, name in enumerate((x_axis, y_axis)):
            print(name, await page.js(OPEN_AXIS.format(idx=idx)), end=", ")
            await asyncio.sleep(1)
            print(await page.js(PICK_OPTION.format(name=json.dumps(name))))
            await asyncio.sleep(2)
        await page.escape()
        await asyncio.sleep(4)
        shot = await page.call("Page.captureScreenshot", format="png")
        with open(out, "wb") as fh:
            fh.write(base64.b64decode(shot["data"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("x_axis")
    ap.add_argument("y_axis")
    a = ap.parse_args()
    browser = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                "--window-size=1400,1100", f"--remote-debugging-port={DEBUG_PORT}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tabs = None
        for _ in range(50):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{DEBUG_PORT}/json"))
                break
            except OSError:
                time.sleep(0.3)
        if tabs is None:
            raise SystemExit("chromium did not open its DevTools port")
        ws_url = next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]
        asyncio.run(shoot(ws_url, a.url, a.out, a.x_axis, a.y_axis))
    finally:
        browser.terminate()


if __name__ == "__main__":
    main()
