"""The web page of a real `insid3 serve` in headless Chromium (Selenium + Debian's chromium and
chromedriver): paint, segment, see the overlays; then match a clicked point."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.images import REFERENCE, TARGET, TARGET_2, decode

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")
WAIT_S = 120
OVERLAY_PIXELS = """
const img = arguments[0], canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
canvas.getContext('2d').drawImage(img, 0, 0);
return canvas.toDataURL('image/png');
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[webdriver.Chrome]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("page")
    paths = {}
    for name, scene in (("reference", REFERENCE), ("target", TARGET), ("target2", TARGET_2)):
        paths[name] = folder / f"{name}.png"
        paths[name].write_bytes(scene.png)
    return paths


def wait(driver, condition, message: str):
    return WebDriverWait(driver, WAIT_S).until(condition, message)


def test_paint_segment_and_see_overlays(browser, server, files):
    browser.get(server.url)
    wait(browser, lambda d: d.find_element(By.ID, "ready").text == "ready", "the page never saw /readyz")
    browser.find_element(By.ID, "ref-file").send_keys(str(files["reference"]))
    wait(browser, lambda d: d.execute_script("return document.getElementById('ref-canvas').width") == 200,
         "the reference never showed")

    # Paint over the disc (centre (90, 70), radius 35) in horizontal strokes, brush 24 px.
    stage = browser.find_element(By.ID, "mask-canvas")
    assert stage.size["width"] == 200, "the canvas should show at its natural size in this window"
    actions = ActionChains(browser)
    for dy in (-24, -8, 8, 24):
        actions.move_to_element_with_offset(stage, 90 - 100 - 26, 70 - 80 + dy).click_and_hold()
        actions.move_by_offset(52, 0).release()
    actions.perform()
    painted = browser.execute_script(
        "const c = document.getElementById('mask-canvas');"
        "return c.getContext('2d').getImageData(90, 70, 1, 1).data[3];")
    assert painted > 0, "the brush did not paint the disc centre"

    browser.find_element(By.ID, "target-files").send_keys(f"{files['target']}\n{files['target2']}")
    browser.find_element(By.ID, "run").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results img.overlay")) == 2
         or d.find_element(By.ID, "status").get_attribute("class") == "error", "no overlays came back")
    assert browser.find_element(By.ID, "status").get_attribute("class") != "error", \
        browser.find_element(By.ID, "status").text
    wait(browser, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                                for i in d.find_elements(By.CSS_SELECTOR, "#results img.overlay")),
         "the overlays never loaded")

    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#results figcaption")]
    assert sorted(c.split(":")[0] for c in captions) == ["target.png", "target2.png"]
    overlay_img = next(i for i in browser.find_elements(By.CSS_SELECTOR, "#results img.overlay")
                       if i.get_attribute("alt") == "overlay of target.png")
    data_url = browser.execute_script(OVERLAY_PIXELS, overlay_img)
    overlay = decode(base64.b64decode(data_url.split(",", 1)[1]), "RGB")
    assert overlay.shape == TARGET.image.shape
    assert not np.array_equal(overlay[60, 100], TARGET.image[60, 100]), "the target disc is not tinted"

    # The painted mask became a stored reference of about the disc's area.
    newest = httpx.get(f"{server.url}/references", params={"limit": 1}, timeout=60).json()["items"][0]
    assert (newest["width"], newest["height"]) == (200, 160)
    assert 0.3 < newest["mask_area"] / REFERENCE.mask.sum() < 3


def test_click_points_and_match(browser, server, files):
    browser.get(server.url)
    browser.find_element(By.ID, "mode-match").click()
    browser.find_element(By.ID, "ref-file").send_keys(str(files["reference"]))
    wait(browser, lambda d: d.execute_script("return document.getElementById('ref-canvas').width") == 200,
         "the reference never showed")
    stage = browser.find_element(By.ID, "ref-stage")
    ActionChains(browser).move_to_element_with_offset(stage, 90 - 100, 70 - 80).click().perform()
    browser.find_element(By.ID, "target-files").send_keys(str(files["target"]))
    browser.find_element(By.ID, "run").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results canvas.matches")
         or d.find_element(By.ID, "status").get_attribute("class") == "error", "no matches came back")
    caption = browser.find_element(By.CSS_SELECTOR, "#results figcaption").text
    assert caption.startswith("target.png: confidence 1: "), caption
