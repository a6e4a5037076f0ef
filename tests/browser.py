"""Driving grade-label as a rater does: the server in its own process (so that it can be
killed) and a real headless Chromium (Debian's chromium and chromium-driver) through Selenium.
Used by tests/test_label_browser.py and scripts/label_screenshots.py.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

KEY_OF = {("rootlet", g): g.lower() for g in "ABCD"} | {("cord", ""): "2", ("other", ""): "3"}


class LabelServer:
    """grade-label as a rater runs it, in its own process (so that it can be killed)."""

    def __init__(self, args: list[str]):
        self.process = subprocess.Popen([sys.executable, "-u", "-m", "grading.cli.label", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        self.url = None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"grade-label stopped: {self.process.stderr.read()}")
            if "open http" in line:
                self.url = line.split("open ", 1)[1].strip()
                break
        assert self.url, "grade-label printed no address"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> str:
        """Ctrl-C: the server exports the table and exits."""
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return err


class Page:
    def __init__(self, size: tuple[int, int] = (1280, 900)):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size[0]},{size[1]}",
                     "--disable-gpu", "--no-first-run"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait_for("window.labelApp && window.labelApp.shown >= 0")

    def js(self, expression: str):
        return self.driver.execute_script(f"return {expression};")

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}; page says: "
                                     f"{self.driver.find_element('id', 'message').text}")
            time.sleep(0.02)

    def press(self, *keys: str, shift: bool = False) -> None:
        chain = ActionChains(self.driver)
        if shift:
            chain.key_down(Keys.SHIFT)
        for key in keys:
            chain.send_keys(key)
        if shift:
            chain.key_up(Keys.SHIFT)
        chain.perform()

    def label(self, level: str, grade: str, outline: bool = False) -> None:
        """One slice, keys only: place a box where the slice has none, then the level or grade."""
        index = self.js("window.labelApp.index")
        self.wait_for(f"window.labelApp.shown === {index}")
        if not self.js("window.labelApp.cur.box"):
            self.press(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, shift=True)
        if level == "rootlet" and outline:  # the suggested sac outline, accepted
            self.press("s")
            self.wait_for("window.labelApp.cur.outline || "
                          "/no bright sac/.test(document.getElementById('message').textContent)")
        self.press(KEY_OF[(level, grade)])
        self.wait_for(f"window.labelApp.index === {index + 1} || window.labelApp.index === {index}")

    def settled(self) -> None:
        self.wait_for("window.labelApp.pendingSaves === 0 && window.labelApp.saveTimer === null")

    def close(self) -> None:
        self.driver.quit()

    def drag_box(self, box: tuple[float, float, float, float]) -> None:
        """Draw a box with the mouse, from corner to corner (display-frame image coordinates)."""
        canvas = self.driver.find_element("id", "canvas")
        ends = self.driver.execute_script(
            "const S = window.labelApp, c = document.getElementById('canvas'), r = c.getBoundingClientRect();"
            "const ratio = c.width / r.width, rows = S.img.rows, cols = S.img.cols;"
            "const s = Math.min(c.width / cols, c.height / rows) * S.view.zoom;"
            "const ox = (c.width - cols * s) / 2 + S.view.panX, oy = (c.height - rows * s) / 2 + S.view.panY;"
            "return arguments[0].map(([x, y]) => [(x * s + ox) / ratio - r.width / 2, (y * s + oy) / ratio - r.height / 2]);",
            [[box[0], box[1]], [box[2], box[3]]])
        (ActionChains(self.driver).move_to_element_with_offset(canvas, *map(round, ends[0])).click_and_hold()
         .move_to_element_with_offset(canvas, *map(round, ends[1])).release().perform())
