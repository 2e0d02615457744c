"""`ospo report`: the HTML page of a hand-built run directory, checked as text and in a real headless Chromium."""

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image as PILImage

from ospo.artifacts import StageDir
from ospo.cli import main
from ospo.records import Image, Prompt, QuestionSet, Rejected, Score, TrainingPair, id_to_filename
from ospo.report import bar_chart_svg, line_plot_svg, write_report

EVIL = "<script>alert(1)</script> a red circle"
QUOTED = 'a "quoted" cat & ampersands'
# (prompt id, category, prompt text)
PROMPTS = [("color-00001", "color", EVIL), ("count-00002", "counting", QUOTED), ("color-00003", "color", "a blue star")]


def _stage(run: Path, name: str, records, counts=None) -> None:
    stage = StageDir(run, name)
    stage.write_part("c00000", records)
    stage.finish({"counts": counts or {}})


def _results(label: str, means: dict, score: float) -> dict:
    tasks = {t: {"mean": m, "low": m - 0.1, "high": m + 0.1, "num_prompts": 4, "num_images": 16}
             for t, m in means.items()}
    overall = {"mean": sum(means.values()) / len(means), "low": 0.2, "high": 0.8, "num_prompts": 8, "num_images": 32}
    return {"set": "geneval", "model": label, "images_per_prompt": 4, "sampling": {}, "seed": 0,
            "summary": {"tasks": tasks, "overall": overall},
            "images": [{"prompt_id": "sw-1", "task": "colors", "prompt": EVIL, "seed": 3, "score": score,
                        "reasons": ["<b>no red circle</b>"] if score < 1 else []}]}


def make_run(run: Path) -> Path:
    """A run directory with every stage a report reads: 3 prompts (one rejected), images, questions, scores, a v3
    selection of 3 pairs in 2 categories, a training folder with a log and one mask, and two evaluations."""
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\nselect:\n  rule: v3\n")
    prompts = [Prompt(pid, text, cat, "basic", "elements") for pid, cat, text in PROMPTS]
    _stage(run, "prompts", prompts + [Rejected("bad-00009", "prompts", "unparseable", raw="<i>junk</i>")], {"in": 4})
    images, sets, scores, pairs = [], [], [], []
    for k, (pid, cat, text) in enumerate(PROMPTS):
        for role, colour in (("positive", "green"), ("negative", "red")):
            iid = f"{pid}/n0/{role}"
            images.append(Image(iid, f"{pid}/n0", pid, 0, role, text, 7, -1.0))
            path = run / "images" / "previews" / f"{id_to_filename(iid)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            PILImage.new("RGB", (32, 32), colour).save(path)
        sets.append(QuestionSet(pid, pid, "positive", text, (f"is there {text}?", "is it <b>red</b>?")))
        scores += [Score(f"{pid}@n0@positive@{pid}", f"{pid}/n0/positive", pid, (0.9, 0.8), (0.1, 0.2)),
                   Score(f"{pid}@n0@negative@{pid}", f"{pid}/n0/negative", pid, (0.3, 0.4), (0.7, 0.6))]
        pairs.append(TrainingPair(pid, text, f"not {text}", f"{pid}/n0/positive", f"{pid}/n0/negative", "v3",
                                  {"chosen_S": 0.7, "rejected_S": -0.3, "num_pairs": 1},
                                  {"category": cat, "subcategory": "basic", "prompt_id": pid, "negative_id": None}))
    _stage(run, "images", images)
    _stage(run, "questions", sets)
    _stage(run, "score", scores)
    _stage(run, "select-v3", pairs, {"in": 3})
    train = run / "train-v3-abcd1234"
    (train / "masks").mkdir(parents=True)
    (train / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "rewards/accuracies": 0.5})
                                             + "\n" for s in range(1, 6)))
    PILImage.new("RGB", (128, 32), "blue").save(train / "masks" / "color-00001.png")
    (train / "masks" / "object_words.json").write_text(json.dumps({"color-00001": ["circle"]}))
    PILImage.new("RGB", (90, 60), "white").save(train / "curves.png")
    (train / "manifest.json").write_text(json.dumps({"stage": train.name, "steps": 5, "pairs": 3,
                                                     "final": {"loss": 0.2}, "counts": {"in": 3, "out": 3}}))
    for label, means, score in (("base", {"colors": 0.4, "counting": 0.3}, 0.0),
                                ("ospo-v3", {"colors": 0.7, "counting": 0.5}, 1.0)):
        (run / "eval" / label).mkdir(parents=True)
        (run / "eval" / label / "results.json").write_text(json.dumps(_results(label, means, score)))
        PILImage.new("RGB", (64, 40), "gray").save(run / "eval" / label / "contact_sheet.png")
    return run


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def _srcs(page: str) -> list[str]:
    return [unquote(s) for s in re.findall(r'<img src="([^"]+)"', page)]


def test_model_text_is_escaped(run):
    page = write_report(run).read_text()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a red circle" in page
    assert "a &quot;quoted&quot; cat &amp; ampersands" in page
    assert "is it &lt;b&gt;red&lt;/b&gt;?" in page and "&lt;b&gt;no red circle&lt;/b&gt;" in page
    assert page.count("<script") == 1  # the page's own filter script and nothing else


def test_report_shows_every_part(run):
    page = write_report(run).read_text()
    assert (run / "report.html").is_file()
    # stages in pipeline order with their counts and rejection reasons
    order = [page.index(f"<td>{s}</td>") for s in ("prompts", "images", "score", "select-v3", "train-v3-abcd1234")]
    assert order == sorted(order)
    assert "unparseable 1" in page
    # pairs: one card each, with category data, previews side by side, answers, rule numbers and the v3 mask
    assert page.count('<div class="pair"') == 3
    assert page.count('data-category="color"') == 2 and page.count('data-category="counting"') == 1
    assert "images/previews/color-00001__n0__positive.png" in _srcs(page)
    assert "train-v3-abcd1234/masks/color-00001.png" in _srcs(page)
    assert '<td class="yes">0.9</td><td>0.1</td><td class="no">0.3</td><td>0.7</td>' in page
    assert "<td>chosen_S</td><td>0.7</td>" in page and "circle" in page
    # training: its manifest's summary, one SVG plot per logged metric, and curves.png
    assert "5 steps on 3 pairs; last step: loss 0.2" in page
    assert page.count('<svg class="plot" width="300"') == 2 and "train-v3-abcd1234/curves.png" in _srcs(page)
    # evaluation: a column per label (base first), intervals, a bar chart per task and overall
    assert page.index("<th>base</th>") < page.index("<th>ospo-v3</th>")
    assert "0.700 <small>[0.600, 0.800]</small>" in page
    assert page.count('<rect class="bar"') == 2 * 3
    assert "eval/base/contact_sheet.png" in _srcs(page) and '<td class="no">wrong</td>' in page
    assert '<td class="yes">correct</td>' in page
    assert "not run yet" not in page and "could not read" not in page


def test_page_works_when_the_run_is_copied(run, tmp_path):
    write_report(run)
    copy = shutil.copytree(run, tmp_path / "elsewhere" / "copied")
    page = (copy / "report.html").read_text()
    assert str(run) not in page
    assert _srcs(page) and all((copy / s).is_file() for s in _srcs(page))


def test_out_elsewhere_links_back_into_the_run(run, tmp_path):
    out = write_report(run, tmp_path / "pages" / "r.html")
    assert all((out.parent / s).resolve().is_file() for s in _srcs(out.read_text()))


def test_missing_parts_show_not_run_yet(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    page = write_report(run).read_text()
    for what in ("no config.yaml", "no select-* folder", "no train-* folder", "no eval/&lt;label&gt;/results.json"):
        assert f"not run yet: {what}" in page
    assert "<img" not in page and "could not read" not in page


def test_malformed_files_give_a_note_not_a_crash(run):
    (run / "eval" / "base" / "results.json").write_text("{not json")
    (run / "eval" / "ospo-v3" / "results.json").write_text(json.dumps({"summary": {"tasks": []}}))
    (run / "select-v3" / "records.jsonl").write_text('{"_type": "TrainingPair"}\n')
    (run / "prompts" / "manifest.json").write_text("[1, 2]")
    with open(run / "train-v3-abcd1234" / "log.jsonl", "a") as f:
        f.write("garbage\n")
    (run / "config.yaml").write_text("a: [unclosed\n")
    page = write_report(run).read_text()
    notes = re.findall(r'<p class="note">(.*?)</p>', page, re.S)
    assert any("base/results.json is not valid JSON" in n for n in notes)
    assert any("ospo-v3/results.json has no summary.tasks" in n for n in notes)
    assert any("records.jsonl:1 is not a valid record" in n for n in notes)
    assert any("manifest.json holds a JSON list" in n for n in notes)
    assert any("1 malformed line(s) skipped" in n for n in notes)
    assert any("config.yaml is not valid YAML" in n for n in notes)
    assert page.count('<svg class="plot" width="300"') == 2  # the good log rows are still plotted


def test_cli_report(run, tmp_path, capsys):
    assert main(["report", str(run), "--out", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_svg_plots_put_values_where_they_belong():
    svg = line_plot_svg("loss", [(0, 0.0), (10, 2.0)], width=300, height=170)
    # x from the left edge (48) to the right one (290); y=0 at the bottom (146), y=2 at the top (22)
    assert 'points="48.0,146.0 290.0,22.0"' in svg
    bars = bar_chart_svg("colors", [("base", 0.5, 0.4, 0.6), ("ospo", 1.0, 0.9, 1.0)], height=170)
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([0-9.]+)"', bars)]
    assert heights == [57.0, 114.0]


# ------------------------------------------------------------------------------------------------ real browser
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
def test_report_in_headless_chromium(run, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    page = write_report(run)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.get(page.as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 3 * 2 + 1 + 1 + 2  # previews, mask, curves.png, contact sheets
        for img in images:  # lazy images load once scrolled to
            driver.execute_script("arguments[0].scrollIntoView();", img)
            WebDriverWait(driver, 10).until(lambda d: d.execute_script("return arguments[0].complete;", img))
            assert driver.execute_script("return arguments[0].naturalWidth;", img) > 0, img.get_attribute("src")

        def visible():
            return sum(p.is_displayed() for p in driver.find_elements(By.CSS_SELECTOR, ".pair"))

        assert visible() == 3 and driver.find_element(By.ID, "pair-count").text == "3 of 3 pairs shown"
        Select(driver.find_element(By.ID, "category-filter")).select_by_value("color")
        assert visible() == 2 and driver.find_element(By.ID, "pair-count").text == "2 of 3 pairs shown"
        Select(driver.find_element(By.ID, "category-filter")).select_by_value("counting")
        assert visible() == 1
        Select(driver.find_element(By.ID, "category-filter")).select_by_value("")
        assert visible() == 3
        # the model's <script> is shown as text, never run (an alert would fail every later WebDriver call)
        assert EVIL in driver.find_element(By.CSS_SELECTOR, '.pair[data-category="color"] p').text
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        driver.quit()
