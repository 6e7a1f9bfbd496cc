"""The monitoring page on a real pipeline, in a real headless browser: a model scores two lines of
the mill stream, one of whose cameras drifts (exposure and focus); the monitor run alerts on that
line only, and the page (served over HTTP) shows its trends, drift table and alert, and the
highest-priority frames with their attention overlays."""

import os
import shutil
import threading
from pathlib import Path

import pytest

from attnloop.monitoring import reference, run
from attnloop.monitoring.stats import Window
from attnloop.stream import Shift, write_stream


@pytest.fixture(scope="module")
def scored_lines(tmp_path_factory):
    """A store with a steady line and a drifted one, scored by one model whose reference is the
    stream as the steady camera sees it (the family's stream split, other frames)."""
    from attnloop.config import Settings
    from attnloop.datasets import make_dataset
    from attnloop.export import export_onnx
    from attnloop.holdout import load_holdout
    from attnloop.runtime import OnnxModel
    from attnloop.scoring import score_store
    from attnloop.training import ORIGINAL_ABN, TrainConfig, train

    root = tmp_path_factory.mktemp("monitor-page")
    data = root / "mill"
    make_dataset("mill", data, seed=0, size=240)
    result = train(data, TrainConfig(epochs=2, guidance="none", seed=0, **ORIGINAL_ABN), progress=False)
    model = OnnxModel(export_onnx(result.model, result.card, root / "model.onnx"), device="cpu")
    settings = Settings.from_env({"ATTNLOOP_HOME": str(root / "home"), "ATTNLOOP_STORE": (root / "store").as_uri()})
    store = settings.store()
    write_stream(store, "mill", count=120, seed=1, source="line-a")
    write_stream(store, "mill", count=120, seed=2, source="line-b", shift=Shift(exposure=1.5, blur=1.5))
    score_store(store, model, model_version="1", overlays=8, progress=False)
    reference.build(store, model, "1", load_holdout(data, split="stream"))
    # the champion the page shows, with its gate decision
    from attnloop import registry
    from attnloop.publish import register_run
    from attnloop.training import save_run

    client = registry.connect(settings.registry_uri)
    version = register_run(client, name=settings.model_name, run_dir=save_run(root / "run", result, TrainConfig(), data="mill"),
                           artifact_root=settings.artifact_root)
    client.set_model_version_tag(settings.model_name, version, registry.TAG + "gate", "promote")
    registry.promote(client, settings.model_name, version)
    return settings, store


def test_a_drifted_camera_alerts_and_a_steady_one_does_not(scored_lines):
    settings, store = scored_lines
    report = run.monitor(store, window=Window.last(1))
    by_line = {line["source"]: line for line in report["lines"]}
    assert set(by_line) == {"line-a", "line-b"} and all(line["status"] == "ok" for line in by_line.values())
    alerted = {a["source"] for a in report["alerts"]}
    assert alerted == {"line-b"}, report["alerts"]
    assert {a["figure"] for a in report["alerts"]} & {"embedding_auc", "confidence_ks"}


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1900"):
        options.add_argument(argument)
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    assert binary and driver, "a headless browser is needed: apt-get install chromium chromium-driver (make setup does)"
    options.binary_location = binary
    return webdriver.Chrome(options=options, service=Service(driver))


def test_the_page_shows_the_drifted_line_in_a_browser(scored_lines):
    from selenium.webdriver.common.by import By

    from attnloop.apps.monitor_page import server

    settings, _ = scored_lines
    httpd = server(settings, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    browser = _browser()
    try:
        browser.get(f"http://127.0.0.1:{httpd.server_port}/")
        assert browser.title == "attnloop monitoring"
        plots = browser.find_elements(By.CSS_SELECTOR, "img.plot")
        assert len(plots) == 2 and all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 600", p) for p in plots)
        assert "alert" in browser.find_element(By.ID, "line-line-b").get_attribute("class").split()
        assert "alert" not in browser.find_element(By.ID, "line-line-a").get_attribute("class").split()
        banner = browser.find_element(By.ID, "alerts").text
        assert "line line-b" in banner and "line line-a" not in banner
        models = browser.find_element(By.ID, "models").text
        assert "Champion: version 1" in models and "1 (champion)" in models and "promote" in models
        overlays = browser.find_elements(By.CSS_SELECTOR, "#frames .frame img")
        assert overlays and all(browser.execute_script("return arguments[0].naturalWidth > 0", o) for o in overlays)
        shot = os.environ.get("ATTNLOOP_MONITOR_SCREENSHOT")  # docs/images/monitoring.png is made this way
        if shot:
            browser.save_screenshot(str(Path(shot)))
        assert browser.get_screenshot_as_png()[:4] == b"\x89PNG"
    finally:
        browser.quit()
        httpd.shutdown()
