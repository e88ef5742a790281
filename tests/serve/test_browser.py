"""The page in a real browser (Debian's chromium through Playwright): draw a stroke with the
mouse; the probabilities and the seen image update, the console stays clean, and no request
leaves 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="browser tests need Debian's chromium at /usr/bin/chromium "
                                       "(`make test` installs it in CI; apt-get install chromium)")


@pytest.fixture(scope="module")
def base_url(app):
    from kangae.serve.runner import background_server

    with background_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.log = {"errors": [], "requests": [], "outside": []}

    def guard(route):
        url = route.request.url
        if url.startswith(base_url + "/") or url.startswith("data:"):
            route.continue_()
        else:
            page.log["outside"].append(url)
            route.abort()

    context.route("**/*", guard)
    page.on("request", lambda r: page.log["requests"].append(r.url))
    page.on("console", lambda m: m.type == "error" and page.log["errors"].append(m.text))
    page.on("pageerror", lambda e: page.log["errors"].append(str(e)))
    page.goto(base_url + "/")
    yield page
    context.close()


def _canvas_sum(page, sel: str) -> int:
    return page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
        return s; }""", sel)


def _stroke(page, points: list[tuple[float, float]]) -> None:
    box = page.locator("#pad").bounding_box()
    at = lambda p: (box["x"] + p[0] * box["width"], box["y"] + p[1] * box["height"])  # noqa: E731
    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(p), steps=8)
    page.mouse.up()


def test_draw_a_stroke_updates_everything(page, base_url) -> None:
    assert page.locator("#bars .bar").count() == 10
    assert page.locator("#bars .val").first.inner_text() == ""
    assert _canvas_sum(page, "#seen") == 0
    _stroke(page, [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)])  # a 7
    page.wait_for_function("() => document.querySelector('#bars .val').textContent.endsWith('%')")
    values = [float(t.rstrip("%")) for t in page.locator("#bars .val").all_inner_texts()]
    assert len(values) == 10 and abs(sum(values) - 100) < 1.0
    assert page.locator("#bars .bar.top").count() == 1
    assert _canvas_sum(page, "#seen") > 0  # the 28x28 image the model saw
    page.wait_for_function("() => document.querySelector('#why').textContent.includes('Red: what')")
    assert _canvas_sum(page, "#mask") > 0
    assert _canvas_sum(page, "#overlay") > 0  # the mask over the drawing itself
    page.wait_for_function("() => document.querySelector('#idea-pred-cap').textContent.includes('p=')")
    assert _canvas_sum(page, "#idea-pred") > 0
    page.select_option("#intended", "3")
    assert "meant: 3" in page.locator("#idea-meant-cap").inner_text()
    before = _canvas_sum(page, "#seen")
    _stroke(page, [(0.3, 0.55), (0.7, 0.55)])  # a cross-bar changes what the model sees
    page.wait_for_function(f"""() => {{
        const c = document.querySelector('#seen');
        const d = c.getContext('2d').getImageData(0, 0, 28, 28).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
        return s !== {before}; }}""")
    page.click("#clear")
    assert _canvas_sum(page, "#seen") == 0 and _canvas_sum(page, "#overlay") == 0
    assert page.locator("#bars .val").first.inner_text() == ""
    page.wait_for_timeout(300)
    assert page.log["errors"] == []
    assert page.log["outside"] == []
    assert all(u.startswith(base_url + "/") or u.startswith("data:") for u in page.log["requests"])
    assert any(u.endswith("/api/predict") for u in page.log["requests"])


def test_fix_button_finds_edits(page) -> None:
    _stroke(page, [(0.5, 0.15), (0.5, 0.85)])
    page.wait_for_function("() => document.querySelector('#bars .val').textContent.endsWith('%')")
    page.select_option("#intended", "7")
    assert page.locator("#fix").is_enabled()
    page.click("#fix")
    page.wait_for_function("() => /pixel edit/.test(document.querySelector('#fix-note').textContent)")
    assert _canvas_sum(page, "#fixed") > 0
    assert page.log["errors"] == [] and page.log["outside"] == []


def test_draw_with_a_finger(browser, base_url) -> None:
    """Real touch events (Chromium's Input.dispatchTouchEvent) draw too, and the page does not scroll."""
    context = browser.new_context(viewport={"width": 800, "height": 1000}, has_touch=True, is_mobile=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base_url + "/")
    box = page.locator("#pad").bounding_box()
    cdp = context.new_cdp_session(page)
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
    for i in range(1, 13):
        cdp.send("Input.dispatchTouchEvent",
                 {"type": "touchMove", "touchPoints": [{"x": x0, "y": y0 + i * box["height"] * 0.06}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_function("() => document.querySelector('#bars .val').textContent.endsWith('%')")
    assert _canvas_sum(page, "#seen") > 0
    assert page.evaluate("() => window.scrollY") == 0
    assert errors == []
    context.close()


@pytest.fixture(scope="module")
def picture_url(picture_app):
    from kangae.serve.runner import background_server

    with background_server(picture_app) as url:
        yield url


def _loaded(page, sel: str) -> int:
    """The natural width of a loaded, shown image (0 while hidden or loading)."""
    return page.evaluate("""(sel) => { const i = document.querySelector(sel);
        return i && !i.hidden && i.complete ? i.naturalWidth : 0; }""", sel)


def test_picture_page_shows_everything(browser, picture_url, tmp_path) -> None:
    """Any other model: choose a picture; the top-5, the crop, both overlays and the two
    prototypes appear (the colour model of colours.py: a red picture is red)."""
    from PIL import Image

    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors, requests, outside = [], [], []

    def guard(route):
        url = route.request.url
        if url.startswith(picture_url + "/") or url.startswith("data:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", guard)
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(picture_url + "/")
    assert page.locator("#pad").count() == 0 and page.locator("#meant option").count() == 9
    picture = tmp_path / "red.jpg"
    Image.new("RGB", (120, 90), (230, 20, 30)).save(picture)
    page.set_input_files("#file", str(picture))
    page.wait_for_function("() => document.querySelectorAll('#top .bar').length === 5")
    assert page.locator("#top .bar .lab").first.inner_text() == "red"
    assert page.locator("#top .bar.top .lab").inner_text() == "red"
    assert "red.jpg: red" in page.locator("#status").inner_text()
    page.wait_for_function("() => !document.querySelector('#crop').hidden")
    page.wait_for_timeout(50)
    assert _loaded(page, "#crop") == 32
    assert "120x90" in page.locator("#prep").inner_text()
    for sel, note in (("#cam", "gradcam"), ("#mask", "mask, 20 steps")):
        page.wait_for_function(f"() => document.querySelector('{sel}-note').textContent.includes('{note}')")
        assert _loaded(page, sel) == 32
    page.wait_for_function("() => document.querySelector('#proto-pred-cap').textContent.includes('p=')")
    assert "predicted: red" in page.locator("#proto-pred-cap").inner_text()
    assert _loaded(page, "#proto-pred") == 32
    page.select_option("#meant", label="cyan")
    page.wait_for_function("() => document.querySelector('#proto-meant-cap').textContent.includes('p=')")
    assert "you mean: cyan" in page.locator("#proto-meant-cap").inner_text()
    assert _loaded(page, "#proto-meant") == 32
    assert errors == [] and outside == []
    # a file that is not a picture: one line, the page carries on (Chromium logs the 400 itself)
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"not a picture at all")
    page.set_input_files("#file", str(junk))
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('unknown format')")
    assert len(errors) == 1 and "status of 400" in errors[0]
    # dropped on the panel: a blue picture drawn in the page itself
    page.evaluate("""async () => {
        const c = document.createElement('canvas'); c.width = 64; c.height = 40;
        const g = c.getContext('2d'); g.fillStyle = '#0010f0'; g.fillRect(0, 0, 64, 40);
        const blob = await new Promise((ok) => c.toBlob(ok, 'image/png'));
        const dt = new DataTransfer(); dt.items.add(new File([blob], 'blue.png', {type: 'image/png'}));
        const drop = new DragEvent('drop', {dataTransfer: dt, bubbles: true});
        document.querySelector('#drop').dispatchEvent(drop);
    }""")
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('blue.png: blue')")
    assert page.locator("#top .bar.top .lab").inner_text() == "blue"
    assert all(u.startswith(picture_url + "/") or u.startswith("data:") for u in requests)
    assert any(u.endswith("/api/explain") for u in requests)
    context.close()
