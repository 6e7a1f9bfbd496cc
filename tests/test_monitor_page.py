"""The monitoring page on a real pipeline, in a real headless browser: a model scores two lines of
the mill stream, one of whose cameras drifts (exposure and focus); the monitor run alerts on that
line only, and the page (served over HTTP) shows its trends, drift table and alert, and the
highest-priority frames with their attention overlays."""

import os
import threading
from pathlib import Path

import pytest
from services import browser

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
    store = settings.store(create=True)
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


def test_the_page_shows_the_drifted_line_in_a_browser(scored_lines):
    from selenium.webdriver.common.by import By

    from attnloop.apps.monitor_page import server

    settings, _ = scored_lines
    httpd = server(settings, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{httpd.server_port}/")
        assert driver.title == "attnloop monitoring"
        plots = driver.find_elements(By.CSS_SELECTOR, "img.plot")
        assert len(plots) == 2 and all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 600", p) for p in plots)
        assert "alert" in driver.find_element(By.ID, "line-line-b").get_attribute("class").split()
        assert "alert" not in driver.find_element(By.ID, "line-line-a").get_attribute("class").split()
        banner = driver.find_element(By.ID, "alerts").text
        assert "line line-b" in banner and "line line-a" not in banner
        models = driver.find_element(By.ID, "models").text
        assert "Champion: version 1" in models and "1 (champion)" in models and "promote" in models
        overlays = driver.find_elements(By.CSS_SELECTOR, "#frames .frame img")
        assert overlays and all(driver.execute_script("return arguments[0].naturalWidth > 0", o) for o in overlays)
        shot = os.environ.get("ATTNLOOP_MONITOR_SCREENSHOT")  # docs/images/monitoring.png is made this way
        if shot:
            driver.save_screenshot(str(Path(shot)))
        assert driver.get_screenshot_as_png()[:4] == b"\x89PNG"
    finally:
        driver.quit()
        httpd.shutdown()


def test_the_page_names_its_store_and_an_empty_one_is_a_warning(scored_lines, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    from attnloop.apps.cli import main
    from attnloop.apps.monitor_page import server

    settings, store = scored_lines
    assert main(["monitor", "page", "--store", store.uri, "--out", str(tmp_path / "full.html")]) == 0
    page = (tmp_path / "full.html").read_text()
    assert f"store {store.uri}" in page and "2 lines" in page and "No scored frames" not in page

    empty = tmp_path / "empty-store"
    empty.mkdir()
    httpd = server(settings, store_uri=empty.as_uri(), port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{httpd.server_port}/")
        banner = driver.find_element(By.ID, "alerts")
        assert "empty" in banner.get_attribute("class").split() and "quiet" not in banner.get_attribute("class").split()
        assert "No scored frames in this store" in banner.text and empty.as_uri() in banner.text
        assert "0 lines" in driver.find_element(By.TAG_NAME, "header").text
    finally:
        driver.quit()
        httpd.shutdown()

    capsys.readouterr()
    assert main(["monitor", "page", "--store", (tmp_path / "typo").as_uri(), "--out", str(tmp_path / "typo.html")]) == 2
    assert "no store at" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_a_class_name_with_dollars_is_text_not_a_formula():
    from attnloop.apps.monitor_page import _trend_plot

    span = {"start": "2026-11-30T00:00:00+00:00", "end": "2026-11-30T03:00:00+00:00"}
    hourly = [{"source": "l1", "bucket": "2026-11-30T01:00:00+00:00", "frames": 3, "confidence_median": 0.8, "confidence_p10": 0.5,
               "margin_mean": 0.4, "off_object_share": 0.1}]
    mix = [{"source": "l1", "bucket": "2026-11-30T01:00:00+00:00", "class": name, "frames": 1} for name in ("$x^$", "cost $5", "ok")]
    png = _trend_plot("l1", hourly, mix, {"reference": None}, {"off_object_rise": 0.2}, span)
    assert png.startswith("data:image/png;base64,")
    from attnloop.figures import confusion_png  # the registry logs it with every version

    assert confusion_png([[1, 0], [2, 3]], ["$x^$", "cost $5"])[:4] == b"\x89PNG"
