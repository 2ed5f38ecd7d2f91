"""The fine-tune panel in Chromium, against a real API, Redis and worker."""

import httpx

from tests.conftest import STACK_KEY
from tests.trainer.test_worker import CORPUS


def test_paste_text_train_watch_progress_and_roll_back(stack, page):
    base, store, procs = stack
    page.goto(base + "/")
    page.click("button[data-tab=finetune]")
    page.fill("#key", STACK_KEY)
    page.fill("#texts", CORPUS)
    page.fill("#job-steps", "20")
    page.fill("#job-batch", "4")
    page.fill("#job-suffix", "panel")
    page.click("#submit-job")
    page.wait_for_function("document.getElementById('job-status').textContent.includes('succeeded')", timeout=120_000)
    status = page.inner_text("#job-status")
    assert "step 20 / 20" in status and "serving as ft:tiny:panel:" in status
    job_id = status.split(":")[0]
    events = httpx.get(f"{base}/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    drawn = {rate for e in events if e.get("data") for rate in e["data"]["level_losses"]}
    assert page.locator("#levels tbody tr").count() == len(drawn) >= 2, "every level drawn, not the last window's"
    shown = [page.locator("#levels tbody tr td:first-child").nth(i).inner_text() for i in range(len(drawn))]
    assert set(shown) == drawn and shown == sorted(shown, key=float)
    assert page.locator("#job-events li").first.inner_text() == "The job has successfully completed"
    # The server swaps to the new version a moment after the job ends; the table follows it on its own.
    page.wait_for_function(
        "document.querySelector('#checkpoints tbody tr:nth-child(2) button')?.textContent === 'serving'", timeout=30_000
    )
    assert page.locator("#checkpoints tbody tr").count() == 2
    assert "0.15: " in page.inner_text("#checkpoints tbody tr:nth-child(2)"), "the version's held-out loss"
    page.click("#checkpoints tbody tr:nth-child(1) button")  # activate the base again
    page.wait_for_function("document.querySelector('#checkpoints tbody tr.current td').textContent === 'base'")
    assert page.inner_text("#server").startswith("tiny")


def test_a_bad_key_is_shown_in_plain_words(stack, page):
    base, store, procs = stack
    page.goto(base + "/")
    page.click("button[data-tab=finetune]")
    page.fill("#key", "wrong-key-0000000000")
    page.fill("#texts", "some text to learn.")
    page.click("#submit-job")
    page.wait_for_selector("#job-error:not([hidden])")
    assert "valid API key is required" in page.inner_text("#job-error")
