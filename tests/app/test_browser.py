"""The page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by selenium.

Uploads the sample photo and a short cut of its speech, clicks Generate, waits for the video, reads the length of the
<video> element in the page and checks that it plays. A screenshot goes to ``$VEXPRESS_APP_SCREENSHOT`` when set
(``docs/img/app.png`` was made that way), else into the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SECONDS = 1.2
FPS = 10
SIZE = 128


def browser_paths() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(reason="chromium and chromedriver are not installed (make test installs the Debian packages "
                           "chromium chromium-driver when run as root)")
    return browser, driver


def wait_for(check, what: str, limit: float = 300.0, every: float = 0.5):
    """Poll ``check()`` until it returns a truthy value (a generous limit only guards against a hang)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")


def save_screenshot(driver, path: Path) -> Path:
    """A small PNG of the page (palette colours)."""
    from PIL import Image

    raw = path.with_suffix(".raw.png")
    driver.save_screenshot(str(raw))
    with Image.open(raw) as img:
        img.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    return path


def test_page_in_headless_chromium(launched, sample_photo, sample_speech, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    browser, driver_path = browser_paths()
    server = launched(height=SIZE, width=SIZE, fps=FPS)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                "--window-size=1280,1280", "--autoplay-policy=no-user-gesture-required", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--metrics-recording-only"):
        options.add_argument(arg)
    # the driver path is given, so selenium-manager (which would download a driver) is never run
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(server.url)
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#generate-button"), "the page")
        photo_input = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"), "photo")
        photo_input[0].send_keys(str(sample_photo))
        speech_input = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#speech input[type=file]"), "speech")
        speech_input[0].send_keys(str(sample_speech(SECONDS)))
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#photo img"), "the photo upload")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#speech audio, #speech .waveform-container, "
                                                               "#speech [data-testid=waveform-Speech]"),
                 "the speech upload")
        driver.find_element(By.CSS_SELECTOR, "#generate-button").click()
        video = wait_for(lambda: [v for v in driver.find_elements(By.CSS_SELECTOR, "#result video")
                                  if v.get_attribute("src")], "the result video")[0]
        wait_for(lambda: driver.execute_script("return arguments[0].readyState >= 1", video), "video metadata")
        duration = driver.execute_script("return arguments[0].duration", video)
        frames = round(SECONDS * FPS)
        assert duration == pytest.approx(frames / FPS, abs=1.5 / FPS), duration
        assert driver.execute_script("return [arguments[0].videoWidth, arguments[0].videoHeight]", video) == \
            [SIZE, SIZE]
        driver.execute_script("arguments[0].muted = true; arguments[0].play();", video)
        wait_for(lambda: driver.execute_script("return arguments[0].currentTime > 0 || arguments[0].ended", video),
                 "playback")
        assert driver.execute_script("return arguments[0].error", video) is None
        seen = driver.find_elements(By.CSS_SELECTOR, "#seen img")
        assert len(seen) >= 3  # the crop, the crop with its keypoints, the V-Kps drawing
        details = driver.find_element(By.CSS_SELECTOR, "#details").text
        assert f"{frames} frames" in details
        # everything the page loaded came from the app itself (no fonts, scripts or analytics from elsewhere)
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        origin = server.url.rstrip("/")
        assert loaded and [u for u in loaded if not u.startswith((origin, "data:", "blob:"))] == []
        driver.execute_script("arguments[0].pause(); arguments[0].currentTime = 0;", video)
        driver.execute_script("window.scrollTo(0, 0)")
        target = Path(os.environ.get("VEXPRESS_APP_SCREENSHOT") or tmp_path / "app.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        assert save_screenshot(driver, target).stat().st_size > 0
        (session,) = server.engine.files.sessions()
    finally:
        driver.quit()
    # closing the tab ends the session: its uploads and videos are deleted (Gradio's unload event)
    wait_for(lambda: session not in server.engine.files.sessions(), "the session's end", limit=120)
    assert not list(server.work_dir.glob("videos/**/*.mp4"))
