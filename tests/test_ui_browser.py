"""End to end: the UI server with the shipped model, driven by headless Chromium through selenium."""

from __future__ import annotations

import http.client
import io
import os
import shutil
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason='the web UI needs gradio (pip install "eigenedit[ui]")')
pytest.importorskip("selenium", reason="the browser test needs selenium (pip install selenium)")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from eigenedit.apps.ui import CONTROL_NAMES, MERGED, N_SLIDERS, Callbacks, EditorState, build_app  # noqa: E402

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


def start_chrome(profile: Path | None = None) -> webdriver.Chrome:
    """A headless Chromium; ``profile``: its own --user-data-dir (cookies, storage), for independent sessions."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1400")
    if profile is not None:
        options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = start_chrome()
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


SESSIONS_WAIT_S = 60  # two browsers and the server share the CPU


def set_seed(driver, seed: int) -> None:
    """Type ``seed`` into the seed box (in the closed "sampling and edit" accordion) and wait for its images."""
    driver.find_element(By.XPATH, "//button[contains(., 'sampling and edit')]").click()
    box = WebDriverWait(driver, SESSIONS_WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#seed input"), "the seed box never appeared"
    )[0]
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(seed), Keys.TAB)
    WebDriverWait(driver, SESSIONS_WAIT_S).until(
        lambda d: f"seed {seed};" in d.find_element(By.ID, "status").text, f"seed {seed} was never rendered"
    )


def slider_value(driver, index: int) -> float:
    return float(driver.find_element(By.CSS_SELECTOR, f"#alpha-{index} input[type=number]").get_attribute("value"))


def shown_pixels(driver, elem_id: str, fetched: dict[str, np.ndarray]) -> np.ndarray | None:
    """The pixels of the image the page shows (each URL fetched once), or None before it shows one.

    gradio rewrites an image's cache file in place each time it is returned again (the unedited image, with every
    slider move), so a fetch at that moment can come back short: then None, and the next poll fetches it again."""
    src = image_src(driver, elem_id)
    if src and src not in fetched:
        try:
            with urllib.request.urlopen(src) as response:
                fetched[src] = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
        except (OSError, http.client.HTTPException):  # a short read, or a truncated PNG
            return None
    return fetched.get(src)


def test_two_sessions_moving_sliders_at_once_get_only_their_own_images(server, tmp_path):
    """Two browsers (own profiles), at seed 1 and seed 2, drag the same sliders to the same ends at the same time;
    each then shows the images of its own seed, exactly as a server that never saw the other session renders them."""
    url, state = server
    seeds, moves = (1, 2), ((0, Keys.ARROW_RIGHT), (1, Keys.ARROW_LEFT))  # slider 0 to +max, slider 1 to -max
    model = state.defaults("shapes32")
    alpha_max, steps = model["alpha_max"], model["preview_steps"]
    alphas = [alpha_max, -alpha_max] + [0.0] * (N_SLIDERS - 2)

    def widget_values(seed: int) -> list:  # the page's inputs (CONTROL_NAMES, alpha_max, upload, sliders)
        controls = dict(model="shapes32", head=MERGED, fold_norm=False, first=0, seed=seed, steps=steps)
        return [controls.get(name) for name in CONTROL_NAMES] + [alpha_max, None, *alphas]

    reference = Callbacks(EditorState())  # its own model and caches: each session's settings rendered alone
    expected = {seed: [np.asarray(image) for image in reference.preview(*widget_values(seed))[:2]] for seed in seeds}
    assert not np.array_equal(expected[1][1], expected[2][1])  # the two sessions' edited images differ
    assert not np.array_equal(expected[1][0], expected[1][1])  # and the sliders change the image

    def drag(driver) -> None:
        sliders = {i: driver.find_element(By.CSS_SELECTOR, f"#alpha-{i} input[type=range]") for i, _ in moves}
        for _ in range(6):  # 6 x 8 presses, the sliders alternating: each passes its end (40 steps of max/40)
            for i, key in moves:
                sliders[i].send_keys(key * 8)

    with ExitStack() as stack:
        pages = {seed: stack.enter_context(start_chrome(tmp_path / f"profile-{seed}")) for seed in seeds}
        for page in pages.values():
            page.get(url)
        for seed, page in pages.items():
            WebDriverWait(page, SESSIONS_WAIT_S).until(lambda d: image_src(d, "edited"), "no edited image shown")
            set_seed(page, seed)
        with ThreadPoolExecutor(len(pages)) as pool:  # both sessions at once
            list(pool.map(drag, pages.values()))
        for page in pages.values():  # the page's own slider values, at once (no server round trip)
            WebDriverWait(page, SESSIONS_WAIT_S).until(
                lambda d: np.allclose([slider_value(d, i) for i in range(N_SLIDERS)], alphas, atol=alpha_max / 1000),
                "the sliders did not reach the ends",
            )

        fetched: dict[str, np.ndarray] = {}

        def shown(seed: int) -> str:
            """Whose images the session of ``seed`` shows: "own", "other" or "none"."""
            images = [shown_pixels(pages[seed], elem_id, fetched) for elem_id in ("plain", "edited")]
            for whose, want in (("own", expected[seed]), ("other", expected[3 - seed])):
                if all(got is not None and np.array_equal(got, w) for got, w in zip(images, want, strict=True)):
                    return whose
            return "none"

        try:
            WebDriverWait(pages[1], SESSIONS_WAIT_S).until(lambda _: all(shown(seed) == "own" for seed in seeds))
        except TimeoutException:
            statuses = {seed: page.find_element(By.ID, "status").text for seed, page in pages.items()}
            whose = {seed: shown(seed) for seed in seeds}
            pytest.fail(f"whose images each session shows: {whose}; status lines: {statuses}")
        for seed, page in pages.items():
            assert f"seed {seed};" in page.find_element(By.ID, "status").text
            assert shown(seed) == "own"  # still, after both settled
