"""Latency of one slider move in ``eigenedit ui`` on a shipped model: server-side render time and, with selenium
and Chromium, the browser round trip (slider input event until the new edited image is on the page).

    python -m benchmarks.ui_latency [--model shapes32] [--steps 10] [--moves 10] [--no-browser]

Prints medians over ``--moves`` moves, each to a new alpha (so no cache answers it); the unedited image, the
directions and the model are cached, as in the UI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import time

import torch

from eigenedit.apps.ui import N_SLIDERS, Callbacks, EditorState, View, build_app

SLIDER = 1  # the direction moved (on shapes32 it changes the size: every move changes the image)


def alphas_for(moves: int, alpha_max: float) -> list[float]:
    """Distinct alphas spread over [-max, max]."""
    return [round(-alpha_max + 2 * alpha_max * (i + 1) / (moves + 1), 3) for i in range(moves)]


def server_side(state: EditorState, view: View, alpha_max: float, moves: int) -> tuple[float, float]:
    """Median seconds of EditorState.render and of the whole gradio callback (render + PIL + PNG file)."""
    callbacks = Callbacks(state)
    state.render(view, [0.0] * N_SLIDERS)  # warm-up: model, directions, unedited image
    renders, callback_times = [], []
    for alpha in alphas_for(moves, alpha_max):
        sliders = [alpha if i == SLIDER else 0.0 for i in range(N_SLIDERS)]
        start = time.perf_counter()
        state.render(view, sliders)
        renders.append(time.perf_counter() - start)
        widgets = [view.model, None, None, "merged", False, 0, view.seed, view.steps, None, None, alpha_max, None]
        start = time.perf_counter()
        callbacks.preview(*widgets, *[a + 0.001 if a else 0.0 for a in sliders])  # a new alpha again
        callback_times.append(time.perf_counter() - start)
    return statistics.median(renders), statistics.median(callback_times)


def browser_round_trip(state: EditorState, view: View, alpha_max: float, moves: int) -> float:
    """Median seconds from a slider's input event to the new edited image in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    demo = build_app(state, view.model, view.steps)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    for arg in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)

    def src(d) -> str:
        found = d.find_elements(By.CSS_SELECTOR, "#edited img")
        return found[0].get_attribute("src") if found else ""

    set_slider = """
        const r = document.querySelector(arguments[0]);
        Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(r, arguments[1]);
        r.dispatchEvent(new Event('input', {bubbles: true}));
    """
    times = []
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 60).until(src)
        for alpha in [alpha_max / 2, *alphas_for(moves, alpha_max)]:  # the first move warms up
            before, edits = src(driver), state.misses["edit"]
            start = time.perf_counter()
            driver.execute_script(set_slider, f"#alpha-{SLIDER} input[type=range]", str(alpha))
            WebDriverWait(driver, 60, poll_frequency=0.005).until(lambda d, b=before: src(d) not in ("", b))
            times.append(time.perf_counter() - start)
            assert state.misses["edit"] == edits + 1, "one slider move should render exactly once"
    finally:
        driver.quit()
        demo.close()
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (the UI's default)")
    parser.add_argument("--moves", type=int, default=10)
    parser.add_argument("--no-browser", action="store_true", help="server-side times only")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    state = EditorState()
    alpha_max = state.defaults(args.model)["alpha_max"]
    view = View(model=args.model, steps=args.steps)
    render, callback = server_side(state, view, alpha_max, args.moves)
    load = os.getloadavg()[0]
    print(f"model {args.model}, {args.steps} DDIM steps, median of {args.moves} slider moves")
    print(f"(torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load:.1f} at the start)")
    print(f"  server render (EditorState.render)        {render * 1e3:7.0f} ms")
    print(f"  server callback (render + PNG for gradio)  {callback * 1e3:7.0f} ms")
    if args.no_browser:
        return
    round_trip = browser_round_trip(state, view, alpha_max, args.moves)
    print(f"  browser round trip (input event -> image)  {round_trip * 1e3:7.0f} ms")


if __name__ == "__main__":
    main()
