"""The viewer in a real headless Chromium: streaming, replay, errors, exports, the comparison."""

import io
import json

import pytest
from PIL import Image

from diffusion_core import animation

STEPS = 12
RECORD_COUNTERS = """() => {
  window.counters = [];
  new MutationObserver(() => window.counters.push(document.getElementById('counter').textContent))
    .observe(document.getElementById('counter'), {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture
def viewer(server, tiny_twin, page):
    with server(ar_model=str(tiny_twin)) as (base, _):
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('server').classList.contains('ok')")
        yield base, page


def generate(page, prompt="the quick brown", steps=STEPS, length=24, compare=False):
    page.fill("#prompt", prompt)
    page.fill("#max_new_tokens", str(length))
    page.fill("#steps", str(steps))
    page.fill("#seed", "7")
    page.select_option("#sampling", "greedy")
    if compare:
        page.check("#compare")
    page.evaluate(RECORD_COUNTERS)
    page.click("#generate")
    page.wait_for_selector("#replay:not([hidden])", timeout=60_000)


def test_generate_streams_every_step_and_ends_with_text(viewer):
    base, page = viewer
    generate(page)
    received = page.evaluate("run.diffusion.map((frame) => frame.step)")
    assert received == list(range(STEPS + 1)), "the opening canvas and every step arrive, in order"
    seen = page.evaluate("window.counters")
    steps = [int(c.split()[1]) for c in seen if c]  # a new run starts from an empty counter
    assert steps == sorted(steps) and steps[-1] == STEPS
    assert page.inner_text("#counter") == f"step {STEPS} / {STEPS}"
    assert page.locator("#text .masked").count() == 0
    assert page.inner_text("#text").startswith("the quick brown")
    assert page.locator("#text .earlier, #text .new").count() > 0
    assert page.locator("#text .new").first.get_attribute("title").startswith("confidence ")


def test_the_scrubber_and_keys_replay_earlier_frames(viewer):
    base, page = viewer
    generate(page)
    page.eval_on_selector("#scrub", "el => { el.value = 1; el.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#counter") == f"step 1 / {STEPS}"
    assert page.locator("#text .masked").count() > 0
    page.click(".legend")  # off the form: the keys drive the replay
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#counter") == f"step 2 / {STEPS}"
    page.keyboard.press("Space")
    page.wait_for_function(f"document.getElementById('counter').textContent === 'step {STEPS} / {STEPS}'")
    assert page.locator("#text .masked").count() == 0


def test_an_invalid_parameter_shows_the_servers_message(viewer):
    base, page = viewer
    page.fill("#steps", "0")
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error-text").startswith("Steps: "), "the form's name for the field, not the API's"
    assert "parameters.steps" not in page.inner_text("#error-text")
    assert "greater than or equal to 1" in page.inner_text("#error-text")
    assert page.is_hidden("#retry")
    assert page.evaluate("document.activeElement.id") == "steps"


def test_chat_is_offered_only_for_a_model_with_a_template_and_needs_a_message(viewer):
    base, page = viewer
    assert page.is_disabled("#mode option[value=chat]"), "the tiny model has no chat template"
    generate(page, prompt="")
    assert "no prompt" in page.inner_text("#counter")


def test_an_empty_chat_message_is_not_sent(chat_viewer):
    _, page = chat_viewer
    assert not page.is_disabled("#mode option[value=chat]")
    page.select_option("#mode", "chat")
    page.fill("#prompt", "  ")
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert "Write a message" in page.inner_text("#error-text") and page.evaluate("run.lastRequest") is None


def test_a_lost_connection_says_so_and_retry_works(viewer):
    base, page = viewer
    network = {"drops": True}

    def route(ws):
        server = ws.connect_to_server()  # messages pass through unless a handler intercepts them
        if network["drops"]:

            def forward_then_drop(message):
                ws.send(message)
                ws.close()

            server.on_message(forward_then_drop)

    page.route_web_socket("**/ws/generate", route)
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert "connection to the server was lost" in page.inner_text("#error-text")
    network["drops"] = False
    page.click("#retry")
    page.wait_for_selector("#replay:not([hidden])", timeout=60_000)
    assert page.is_hidden("#error") and page.locator("#text .masked").count() == 0


def test_side_by_side_with_the_autoregressive_twin(viewer):
    base, page = viewer
    generate(page, compare=True)
    assert page.is_visible("#pane-ar")
    assert page.inner_text("#ar-counter").startswith("token ")
    assert int(page.inner_text("#ar-passes").split()[0]) == int(page.inner_text("#ar-counter").split()[1])
    assert page.inner_text("#ar-text").startswith("the quick brown")
    assert float(page.inner_text("#elapsed").split()[0]) > 0 and float(page.inner_text("#ar-elapsed").split()[0]) > 0
    with page.expect_download() as download:
        page.click("#gif")
    image = Image.open(download.value.path())
    assert image.width == 2 * 560 + 2, "the GIF of a side-by-side run has both panes"
    image.seek(image.n_frames - 1)
    right = image.convert("RGB").crop((560 + 2, 0, 2 * 560 + 2, image.height))
    assert right.getcolors(1 << 16) and len(right.getcolors(1 << 16)) > 3, "the twin's pane is drawn, not blank"


def test_gif_export_has_one_frame_per_step_and_the_promised_size(viewer):
    base, page = viewer
    generate(page)
    with page.expect_download() as download:
        page.click("#gif")
    received = page.evaluate("run.diffusion.map(f => f.step)")
    assert received == list(range(STEPS + 1))  # the canvas, then every step (fewer than the server's stream buffer)
    image = Image.open(io.BytesIO(open(download.value.path(), "rb").read()))
    assert image.format == "GIF" and image.n_frames == len(received)  # one frame per frame the page showed
    assert image.width == animation.WIDTH
    durations = []
    for n in range(image.n_frames):
        image.seek(n)
        durations.append(image.info["duration"])
    assert durations[:-1] == [animation.FRAME_MS] * (len(received) - 1) and durations[-1] == animation.HOLD_MS


def test_html_export_replays_offline(viewer, browser, tmp_path):
    base, page = viewer
    generate(page)
    with page.expect_download() as download:
        page.click("#html")
    html = open(download.value.path()).read()
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    saved = tmp_path / "run.html"
    saved.write_text(html)
    offline = browser.new_page()
    offline.route(
        "**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_()
    )
    offline.goto(saved.as_uri())
    frames = json.loads(html.split("const FRAMES = ", 1)[1].split(";\n", 1)[0])
    assert len(frames) == len(page.evaluate("run.diffusion")) and frames[-1]["step"] == STEPS
    assert offline.inner_text("#status").startswith(f"step {STEPS} / {STEPS}")
    offline.eval_on_selector("#scrub", "el => { el.value = 0; el.dispatchEvent(new Event('input')); }")
    assert offline.inner_text("#status").startswith(f"step 0 / {STEPS}") and offline.locator(".masked").count() > 0
    offline.close()


def test_the_form_takes_its_choices_and_bounds_from_the_server(viewer):
    from diffusion_core import config

    _, page = viewer
    options = page.evaluate("(id) => [...document.getElementById(id).options].map((o) => o.textContent)", "cache")
    assert options == list(config.CACHE_MODES)
    schedules = page.evaluate("[...document.getElementById('schedule').options].map((o) => o.textContent)")
    assert schedules == list(config.SCHEDULES) and page.input_value("#schedule") == "cosine"
    assert page.get_attribute("#temperature", "max") == "100" and page.get_attribute("#top_k", "min") == "0"
    assert "keys and values" in page.get_attribute("#cache", "title")


@pytest.fixture
def chat_viewer(server, page, tiny_model, tokenizer, tmp_path):
    import copy

    from diffusion_core import checkpoint

    chatty = copy.deepcopy(tokenizer)
    chatty.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    path = checkpoint.save(tiny_model, chatty, tmp_path / "tiny-chat", {"format": 1})
    with server(model=str(path)) as (base, _):
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('server').classList.contains('ok')")
        yield base, page


def test_chat_mode_denoises_each_reply_live_and_keeps_the_conversation(chat_viewer):
    _, page = chat_viewer
    page.select_option("#mode", "chat")
    assert page.is_visible("#conversation") and page.is_disabled("#compare")
    for turn, message in enumerate(["the quick brown fox", "a journey of a thousand"], 1):
        page.fill("#prompt", message)
        page.fill("#max_new_tokens", "8")
        page.fill("#steps", "4")
        page.evaluate(RECORD_COUNTERS)
        page.click("#generate")
        page.wait_for_function(f"document.querySelectorAll('#turns li').length === {2 * turn}", timeout=60_000)
        received = page.evaluate("run.diffusion.map((frame) => frame.step)")
        assert received == list(range(5)), "every step of the reply streamed"
        assert page.locator("#text .prompt").count() == 0, "the reply pane shows the reply, not the template"
    turns = page.locator("#turns li")
    assert [turns.nth(i).get_attribute("class") for i in range(4)] == ["user", "assistant", "user", "assistant"]
    assert "a journey of a thousand" in turns.nth(2).inner_text() and turns.nth(3).inner_text().startswith("model")
    sent = page.evaluate("run.lastRequest.messages.map((m) => m.role)")
    assert sent == ["user", "assistant", "user"], "the second reply was asked with the whole conversation"


def test_the_form_starts_from_the_servers_defaults_and_sends_them(viewer):
    from dataclasses import fields

    from diffusion_core import GenerationConfig

    _, page = viewer
    defaults = {f.name: f.default for f in fields(GenerationConfig)}
    assert page.input_value("#max_new_tokens") == str(defaults["max_new_tokens"])
    assert page.input_value("#cache") == defaults["cache"] and page.input_value("#sampling") == defaults["sampling"]
    assert page.is_checked("#future_masks") is defaults["future_masks"]
    assert page.get_attribute("#steps", "min") == "1" and page.input_value("#seed") == ""
    sent = page.evaluate("request().parameters")
    for name in ("max_new_tokens", "steps", "cache", "cache_refresh", "spacing", "top_p", "future_masks"):
        assert sent[name] == defaults[name], name
    assert "seed" not in sent


def test_the_suffix_field_refuses_what_the_api_would(viewer):
    """Chromium compiles `pattern` with the v flag: an invalid class would silently check nothing."""
    base, page = viewer
    page.click("button[data-tab=finetune]")
    page.fill("#job-suffix", "Bad Name!")
    assert page.eval_on_selector("#job-suffix", "el => el.validity.patternMismatch")
    page.fill("#job-suffix", "my-model-2")
    assert page.eval_on_selector("#job-suffix", "el => el.validity.valid")


def test_a_run_that_finishes_in_fewer_passes_says_so_with_a_full_bar(viewer):
    base, page = viewer
    page.select_option("#remasking", "threshold")
    page.fill("#threshold", "0.001")  # every prediction is kept: one pass per block
    generate(page)
    assert page.inner_text("#counter") == f"step 2 / {STEPS} · done early"
    assert page.evaluate("document.getElementById('progress').style.width") == "100%"


def test_an_error_clears_the_previous_runs_counters(viewer):
    base, page = viewer
    generate(page)
    page.fill("#max_new_tokens", "100")
    page.fill("#block_length", "0")  # one block longer than the model's 64 positions: refused
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#counter") == "" and page.inner_text("#text") == ""
