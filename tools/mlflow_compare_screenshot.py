"""Screenshot of the MLflow Compare view as a scatter plot (headless Chromium over the DevTools protocol).

    python tools/mlflow_compare_screenshot.py 'http://127.0.0.1:5123/#/compare-runs?runs=[...]&experiments=["1"]' \
        docs/mlflow-compare-windows.png window_start ndcg_retention

Needs a running `mlflow ui` and Debian's `chromium`. Opens the Scatter Plot tab, picks the X and Y axes by
name, closes the menus and saves a PNG. How docs/mlflow-compare-windows.png was made.
"""
import asyncio
import base64
import json
import subprocess
import sys
import time
import urllib.request

import websockets

URL = sys.argv[1]; OUT = sys.argv[2]
proc = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                         "--window-size=1400,1100", "--remote-debugging-port=9333", "about:blank"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(50):
        try:
            tabs = json.load(urllib.request.urlopen("http://127.0.0.1:9333/json")); break
        except Exception: time.sleep(0.3)
    ws_url = [t for t in tabs if t["type"] == "page"][0]["webSocketDebuggerUrl"]
    async def main():
        async with websockets.connect(ws_url, max_size=50_000_000) as ws:
            n = [0]
            async def call(method, **params):
                n[0] += 1; i = n[0]
                await ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    m = json.loads(await ws.recv())
                    if m.get("id") == i: return m.get("result", m)
            async def js(expr):
                r = await call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
                return r.get("result", {}).get("value")
            await call("Page.enable")
            await call("Page.navigate", url=URL)
            await asyncio.sleep(12)
            rect = await js("(()=>{const t=[...document.querySelectorAll('[role=tab]')].find(e=>e.textContent.trim()==='Scatter Plot'); const r=t.getBoundingClientRect(); return [r.x+r.width/2, r.y+r.height/2]})()")
            for typ in ("mousePressed", "mouseReleased"):
                await call("Input.dispatchMouseEvent", type=typ, x=rect[0], y=rect[1], button="left", clickCount=1)
            await asyncio.sleep(3)
            print("active tab:", await js("(()=>{const t=document.querySelector('[role=tab][aria-selected=true]'); return t&&t.textContent})()"))
            async def choose(idx, text):
                # open the idx-th select on the scatter panel, then click the option named text
                r = await js(f"""(()=>{{const s=[...document.querySelectorAll('[role=combobox]')]; if(s.length<={idx}) return 'n='+s.length;
                    const el=s[{idx}]; el.focus(); el.dispatchEvent(new MouseEvent('mousedown',{{bubbles:true}})); el.click(); return 'opened '+s.length+' '+el.tagName+' '+el.className.slice(0,60)}})()""")
                print("open", idx, r); await asyncio.sleep(1.0)
                print("focus", await js(f"(()=>{{const s=[...document.querySelectorAll('[role=combobox]')]; const e=s[{idx}]; const i=e.tagName==='INPUT'?e:e.querySelector('input'); if(i){{i.focus(); return 'ok'}} return 'noinput'}})()"))
                await call("Input.insertText", text=text); await asyncio.sleep(1.5)
                r = await js(f"""(()=>{{const o=[...document.querySelectorAll('[role=option]')].filter(e=>e.offsetParent!==null);
                    const m=o.find(e=>e.textContent.trim()==='{text}'); if(m){{m.click(); return 'picked'}} return 'options: '+o.map(e=>e.textContent.trim()).slice(0,40).join('|')}})()""")
                print("pick", text, r); await asyncio.sleep(2)
            await choose(0, sys.argv[3]); await choose(1, sys.argv[4])
            for typ in ("keyDown", "keyUp"):
                await call("Input.dispatchKeyEvent", type=typ, key="Escape", code="Escape", windowsVirtualKeyCode=27)
            await asyncio.sleep(4)
            shot = await call("Page.captureScreenshot", format="png")
            open(OUT, "wb").write(base64.b64decode(shot["data"]))
    asyncio.run(main())
finally:
    proc.terminate()
