"""The studio page in a real browser: Debian's chromium driven by Playwright, against the real
``generator studio`` command (a subprocess on a free port, tiny untrained models for speed).

Skipped with the reason when chromium or Playwright is missing; .ci/run installs both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import music21
import pytest

pytest.importorskip("fastapi", reason='the studio extra is not installed (pip install ".[studio]")')
sync_api = pytest.importorskip(
    "playwright.sync_api", reason='Playwright is not installed (pip install ".[studio-test]")'
)

TEST_MIDI = Path(music21.__file__).parent / "midi" / "testPrimitive"
CHROMIUM = os.environ.get("GENERATOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory, music_run, text_run):
    """``generator studio --port 0`` with the tiny runs offered; yields its address, then Ctrl-C."""
    work = tmp_path_factory.mktemp("studio-work")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from generator.cli.main import generator; generator()",
            "studio",
            "--port",
            "0",
            "--workdir",
            str(work),
            "--checkpoint",
            str(music_run),
            "--checkpoint",
            str(text_run),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if "open http://" not in line:
        process.kill()
        pytest.fail(f"the studio did not start: {line}{process.stderr.read()}")
    url = line.split("open ", 1)[1].split()[0]
    yield url
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    try:
        code = process.wait(timeout=30)
    finally:
        process.kill()
    assert code == 0 and "generator studio: stopped" in process.stdout.read(), process.stderr.read()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as e:  # a chromium Playwright cannot drive
            pytest.skip(f"Playwright cannot start {CHROMIUM}: {str(e).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the studio that records every request it makes."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(server)
    page.wait_for_selector("body[data-ready='1']")
    yield page
    hosts = {urlsplit(u).netloc for u in page.requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {urlsplit(server).netloc}, f"the page reached other hosts: {hosts}"
    context.close()


def test_upload_a_seed_continue_it_see_the_roll_hear_and_download_it(page, tmp_path):
    page.set_input_files("#seed-file", str(TEST_MIDI / "test05.mid"))
    sync_api.expect(page.locator("#seed-info")).to_contain_text("Chosen model: pop-piano")
    page.select_option("#model", "music")
    page.fill("#seconds", "2")
    page.fill("#random-seed", "5")
    page.click("#generate")
    page.wait_for_selector("#takes li", timeout=60_000)
    sync_api.expect(page.locator("#roll-title")).to_contain_text("Take 1: test05.mid")
    coloured = page.evaluate("""() => {
        const c = document.getElementById('roll'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && Math.abs(d[i] - d[i + 2]) > 40) n++;
        return n; }""")
    assert coloured > 100  # notes drawn in track colours, not only the grid
    page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=20_000)
    assert page.evaluate("document.getElementById('player').duration") > 2
    with page.expect_download() as download:
        page.click("#takes li a.midi")
    path = tmp_path / "take.mid"
    download.value.save_as(path)
    assert path.read_bytes()[:4] == b"MThd" and download.value.suggested_filename.startswith("take-1-")
    page.click("#takes li button.regenerate")
    page.wait_for_selector("#takes li:nth-child(2)", timeout=60_000)


def test_a_bad_file_shows_a_message_and_the_page_goes_on(page, tmp_path):
    bad = tmp_path / "broken.mid"
    bad.write_bytes(b"MThd this is not a MIDI file")
    page.set_input_files("#seed-file", str(bad))
    sync_api.expect(page.locator("#error")).to_contain_text("broken.mid could not be read as music")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    page.set_input_files("#seed-file", str(text))
    sync_api.expect(page.locator("#error")).to_contain_text("not a score file")
    page.select_option("#seed-choice", "example-melody")
    sync_api.expect(page.locator("#roll-title")).to_contain_text("ode-to-joy.mid")


def test_text_streams_in_and_can_be_downloaded(page):
    page.click("#tab-text")
    page.select_option("#text-model", "text")
    page.fill("#prompt", "To be")
    page.fill("#length", "600")
    page.click("#text-generate")
    sync_api.expect(page.locator("#text-download")).to_be_visible(timeout=60_000)
    assert page.inner_text("#text-out").startswith("To be") and len(page.inner_text("#text-out")) > 100
    with page.expect_download() as download:
        page.click("#text-download")
    assert Path(download.value.path()).read_text(encoding="utf-8").startswith("To be")


def test_long_work_shows_its_progress_and_cancel_stops_it(page):
    page.select_option("#model", "music")
    page.select_option("#seed-choice", "")
    page.fill("#seconds", "300")
    takes = page.locator("#takes li").count()
    page.click("#generate")
    status = page.locator("#music-status")
    sync_api.expect(status).to_be_visible()
    sync_api.expect(status.locator(".stage")).to_contain_text("generating 300 s with music")
    page.click("#music-status .cancel")
    sync_api.expect(status).to_be_hidden(timeout=30_000)
    assert page.locator("#takes li").count() == takes
    assert not page.is_visible("#error")
