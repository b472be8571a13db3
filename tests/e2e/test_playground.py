"""The playground page in a real headless Chromium (Debian's chromium + chromium-driver).

`make test` apt-installs both when they are missing and it runs as root; elsewhere these
tests skip, saying so. Screenshots go to a temporary folder, or to
`PLAYGROUND_SCREENSHOT_DIR` (e.g. `docs`) when set.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from .clients import metric
from .engines import Pause
from .test_classifier_upload import csv_bytes, v2_labels

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Without the background-networking flags Chromium's own connections are refused here and
# it stalls; a fresh profile per run keeps tests independent.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,1100",
]
WAIT_S = 60.0
TEXT_MODEL = "shakespeare"
RUNNING = "mlserver_streaming:num_requests_running"
FINISHED = "mlserver_streaming:request_success_total"
GENERATED = "mlserver_streaming:generation_tokens_total"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"{CHROMIUM} or {CHROMEDRIVER} is missing: `make test` apt-installs Debian's chromium "
        "and chromium-driver when run as root with apt available (it was not here).",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for these tests, quit afterwards."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    folder = os.environ.get("PLAYGROUND_SCREENSHOT_DIR")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


PAGE_CATCH_UP_S = 2.0
"""How long the engine waits for the page to show a step's tokens (a token of blanks
shows nothing new: then it steps on after this)."""


def generated(server) -> float:
    """Tokens the text model has generated so far, by the server's count."""
    return asyncio.run(metric(server, GENERATED, model_name=TEXT_MODEL))


def settle(check: Callable[[], object], timeout: float) -> None:
    """Poll `check` for up to `timeout` seconds; go on either way."""
    end = time.monotonic() + timeout
    while not check() and time.monotonic() < end:
        time.sleep(0.01)


def wait_for(check: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    """Poll until `check()` is truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def open_page(browser, server) -> None:
    browser.get(f"{server.http_url}/playground")
    body = browser.find_element(By.TAG_NAME, "body")
    wait_for(lambda: body.get_attribute("data-text-models"), "the text model list")
    wait_for(lambda: body.get_attribute("data-classifiers"), "the classifier list")


def state(browser, name: str) -> str | None:
    return browser.find_element(By.TAG_NAME, "body").get_attribute(f"data-{name}-state")


def fill(browser, element_id: str, value: str) -> None:
    """Set a field's value as a paste would (typing 100 kB key by key is needlessly slow)."""
    element = browser.find_element(By.ID, element_id)
    browser.execute_script("arguments[0].value = arguments[1];", element, value)


def select(browser, element_id: str, visible_text: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, element_id)).select_by_visible_text(visible_text)


def test_text_grows_while_streaming_and_stop_frees_the_sequence(browser, server) -> None:
    open_page(browser, server)
    cancelled_before = asyncio.run(metric(server, FINISHED, finished_reason="cancelled"))
    fill(browser, "text-prompt", "ROMEO:\n")
    fill(browser, "text-max-tokens", "250")
    fill(browser, "text-seed", "3")  # 250 tokens, no early end
    output = browser.find_element(By.ID, "text-output")
    # The engines run only a few milliseconds at a time, between samples: the completion
    # grows by a token or a few per step and is still streaming when Stop is pressed. After
    # a step that made tokens the page gets time to show them before the next step, so a
    # browser slowed by a busy machine cannot let the engine run on to the end unseen.
    with Pause.engines_of(server).held() as engines:
        browser.find_element(By.ID, "text-send").click()
        samples = [""]
        tokens = generated(server)
        deadline = time.monotonic() + WAIT_S
        while len(set(samples)) < 5:
            assert state(browser, "text") == "streaming", samples
            assert time.monotonic() < deadline, f"the text did not grow: {samples}"
            engines.step()
            time.sleep(0.02)  # what the step generated reaches the page meanwhile
            if generated(server) > tokens:
                tokens = generated(server)
                settle(lambda: output.text != samples[-1], PAGE_CATCH_UP_S)
            samples.append(output.text)
        growth = [b for a, b in zip(samples, samples[1:], strict=False) if b != a]
        assert len(growth) >= 4, f"the text did not grow step by step: {samples}"
        assert all(b.startswith(a) for a, b in zip(samples, samples[1:], strict=False)), samples
        browser.find_element(By.ID, "text-stop").click()
        wait_for(lambda: state(browser, "text") in ("stopped", "finished"), "the stream to end")
        assert state(browser, "text") == "stopped", "the completion ended before Stop was pressed"
        assert len(output.text) >= len(samples[-1])
    # Resumed: the engine ends the sequence the server cancelled when the page let go.
    wait_for(
        lambda: asyncio.run(metric(server, RUNNING, model_name=TEXT_MODEL)) == 0,
        "the server to free the sequence",
    )
    wait_for(
        lambda: (
            asyncio.run(metric(server, FINISHED, finished_reason="cancelled")) > cancelled_before
        ),
        "the sequence to be counted as cancelled",
    )
    cancelled = asyncio.run(metric(server, FINISHED, finished_reason="cancelled"))
    assert cancelled == cancelled_before + 1


def test_chat_streams_to_its_end_and_shows_usage(browser, server, shots: Path) -> None:
    open_page(browser, server)
    select(browser, "text-mode", "Chat (/v1/chat/completions)")
    fill(browser, "chat-name", "HAMLET")
    fill(browser, "text-prompt", "Who's there?")
    fill(browser, "text-max-tokens", "60")
    fill(browser, "text-seed", "7")
    browser.find_element(By.ID, "text-send").click()
    wait_for(lambda: state(browser, "text") == "finished", "the chat reply to finish")
    usage = browser.find_element(By.ID, "text-usage").text
    assert "prompt " in usage and "completion " in usage and "total " in usage, usage
    turns = browser.find_elements(By.CSS_SELECTOR, "#chat-log .turn")
    assert [t.get_attribute("class") for t in turns] == ["turn user", "turn assistant"]
    assert browser.find_element(By.ID, "text-output").text.strip()
    browser.save_screenshot(str(shots / "playground-text.png"))


def test_classifier_panel_streams_pasted_rows_to_100_percent(browser, server, shots) -> None:
    rows = load_breast_cancer().data
    open_page(browser, server)
    browser.find_element(By.ID, "tab-clf").click()
    select(browser, "clf-model", "tumor-classifier v2")
    fill(browser, "clf-rows", csv_bytes(rows).decode())
    fill(browser, "clf-chunk", "50")
    browser.find_element(By.ID, "clf-run").click()
    wait_for(lambda: state(browser, "clf") in ("complete", "error"), "the classification")
    assert state(browser, "clf") == "complete", browser.find_element(By.ID, "clf-status").text
    progress = browser.find_element(By.ID, "clf-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(len(rows))
    assert "569 / 569 rows (100.0%)" in browser.find_element(By.ID, "clf-progress-text").text
    shown = browser.find_elements(By.CSS_SELECTOR, "#clf-results tbody tr")
    expected = asyncio.run(v2_labels(server, rows, version="2"))
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in shown] == expected[: len(shown)]
    assert len(shown) == 200  # the table shows the first 200; the summary counts all
    summary = browser.find_element(By.ID, "clf-summary").text
    counts = dict(part.split(": ") for part in summary.split(" · "))
    assert {k: int(v) for k, v in counts.items()} == {
        label: expected.count(label) for label in set(expected)
    }
    browser.save_screenshot(str(shots / "playground-classifier.png"))


def test_classifier_panel_uploads_a_csv_file(browser, server, tmp_path: Path) -> None:
    rows = np.tile(load_breast_cancer().data, (9, 1))[:5000]
    path = tmp_path / "rows.csv"
    path.write_bytes(csv_bytes(rows))
    open_page(browser, server)
    browser.find_element(By.ID, "tab-clf").click()
    select(browser, "clf-model", "tumor-classifier v1")
    fill(browser, "clf-chunk", "1000")
    browser.find_element(By.ID, "clf-file").send_keys(str(path))
    browser.find_element(By.ID, "clf-upload").click()
    wait_for(lambda: state(browser, "clf") in ("complete", "error"), "the upload's predictions")
    assert state(browser, "clf") == "complete", browser.find_element(By.ID, "clf-status").text
    progress = browser.find_element(By.ID, "clf-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "5000"
    summary = browser.find_element(By.ID, "clf-summary").text
    assert sum(int(part.split(": ")[1]) for part in summary.split(" · ")) == 5000
