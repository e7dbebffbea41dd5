"""End to end: the UI server with the shipped model, driven by headless Chromium through selenium."""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request

import pytest

pytest.importorskip("gradio", reason='the web UI needs gradio (pip install "eigenedit[ui]")')
pytest.importorskip("selenium", reason="the browser test needs selenium (pip install selenium)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from eigenedit.apps.ui import EditorState, build_app  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None, reason="needs chromium and chromedriver (Debian: chromium-driver)"
    ),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # gradio's own pandas deprecations
]
WAIT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """The UI on a free port, served from a thread of this process."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    state = EditorState()
    demo = build_app(state, "shapes32")
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", state
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1400")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def image_src(driver, elem_id: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return found[0].get_attribute("src") if found else ""


def wait_for(driver, condition, message: str):
    return WebDriverWait(driver, WAIT_S).until(condition, message)


def test_moving_a_slider_changes_the_edited_image(server, browser):
    url, state = server
    browser.get(url)
    wait_for(browser, lambda d: image_src(d, "edited"), "the page never showed the edited image")
    plain, before = image_src(browser, "plain"), image_src(browser, "edited")
    edits = state.misses["edit"]
    slider = browser.find_element(By.CSS_SELECTOR, "#alpha-0 input[type=range]")
    slider.send_keys(Keys.ARROW_RIGHT * 40)  # 40 steps of max/40: alpha = max
    wait_for(browser, lambda d: image_src(d, "edited") not in ("", before), "moving the slider changed nothing")
    after = image_src(browser, "edited")
    assert state.misses["edit"] > edits  # the server rendered an edit
    assert float(browser.find_element(By.CSS_SELECTOR, "#alpha-0 input[type=number]").get_attribute("value")) > 0
    with urllib.request.urlopen(before) as old, urllib.request.urlopen(after) as new:
        assert old.read() != new.read()
    assert image_src(browser, "plain") == plain  # the unedited image stays
    assert "rendered in" in browser.find_element(By.ID, "status").text


def test_a_bad_model_name_is_shown_on_the_page(server, browser):
    url, _ = server
    browser.get(url)
    wait_for(browser, lambda d: image_src(d, "edited"), "the page never showed the edited image")
    box = browser.find_element(By.CSS_SELECTOR, "#model input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("no-such-model", Keys.ENTER)
    status = wait_for(
        browser,
        lambda d: "unknown model" in d.find_element(By.ID, "status").text and d.find_element(By.ID, "status"),
        "no error message for an unknown model",
    )
    assert "no-such-model" in status.text


def test_an_uploaded_image_is_edited(server, browser, tmp_path):
    import numpy as np
    from PIL import Image

    url, state = server
    picture = tmp_path / "upload.png"
    Image.fromarray(np.full((48, 64, 3), (200, 120, 40), np.uint8)).save(picture)
    browser.get(url)
    wait_for(browser, lambda d: image_src(d, "plain"), "the page never showed the unedited image")
    before, inversions = image_src(browser, "plain"), state.misses["inversion"]
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(picture))
    wait_for(browser, lambda d: "uploaded image" in d.find_element(By.ID, "status").text, "the upload was not edited")
    assert image_src(browser, "plain") != before  # now the reconstruction of the upload
    assert "resized from 64x48" in browser.find_element(By.ID, "status").text
    assert state.misses["inversion"] == inversions + 1
