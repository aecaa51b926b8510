"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright for
Python through executable_path: no browser download) against the live stack: sign in, a
running job's progress moving in the list, its chart gaining one point per finished epoch,
cancel, a job submitted from the form, deletes of a job, a sweep and a data set after
asking, CSRF, and the cookie's flags. The job page of the
form's job is saved as docs/images/dashboard-job.png, the README's screenshot."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from service.diff import COMPARED

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "dashboard-job.png"
SWEEP_SCREENSHOT = ROOT / "docs" / "images" / "dashboard-sweep.png"
# as root, in a machine without a display or a network beyond loopback
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "no Chromium: install Debian's chromium package (.ci/install-chromium does, and "
            "make test runs it), or set CHROMIUM to its path"
        )
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def errors():
    """Script errors of every page: the suite fails on any (a CSP refusal included)."""
    found: list[str] = []
    yield found
    assert found == []


@pytest.fixture(scope="module")
def signed_in(browser, stack, errors):
    """A browser context signed in as alice through the form."""
    context = browser.new_context(viewport={"width": 1200, "height": 1000}, base_url=stack.base)
    page = context.new_page()
    watch(page, errors)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in\?next=/$"))
    page.fill("input[name=token]", stack.tokens["alice"])
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{stack.base}/")
    expect(page.locator("#tenant")).to_have_text("alice")
    yield context
    context.close()


SUBRESOURCES = ("script", "stylesheet", "image", "font", "fetch", "xhr", "eventsource")


def watch(page: Page, errors: list[str]) -> None:
    """Record script errors, refusals (CSP's among them) and failed subresources; a page's
    own status (a 401 sign-in, a 404 job) is the tests' to check."""
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))

    def console(message):
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(f"{page.url}: {message.text}")

    def response(answer):
        if answer.status >= 400 and answer.request.resource_type in SUBRESOURCES:
            errors.append(f"{answer.url}: {answer.status}")

    page.on("console", console)
    page.on("response", response)


def slow_job(epochs: int = 400) -> dict:
    """About a tenth of a second per epoch: long enough to watch, and cancelled by the tests."""
    rng = np.random.default_rng(5)
    inputs = rng.random((200, 32)).round(3)
    targets = np.eye(2)[rng.integers(0, 2, 200)]
    return {
        "name": "slow",
        "structure": [32, 512, 512, 2],
        "epochs": epochs,
        "learning_rate": 0.05,
        "seed": 3,
        "data": {"inputs": inputs.tolist(), "targets": targets.tolist(), "batch_size": 1},
    }


def points(page: Page, chart: str = "#cost-chart") -> int:
    return int(page.locator(chart).get_attribute("data-points"))


def test_sign_in_keeps_the_token_out_of_the_url_and_the_script(browser, stack, errors):
    context = browser.new_context(base_url=stack.base)
    page = context.new_page()
    watch(page, errors)
    page.goto("/sign-in")
    page.fill("input[name=token]", "bpj_made-up")
    page.click("button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("unknown, expired or revoked")
    page.fill("input[name=token]", stack.tokens["bob"])
    page.click("button[type=submit]")
    expect(page.locator("#tenant")).to_have_text("bob")
    assert stack.tokens["bob"] not in page.url
    (cookie,) = [c for c in context.cookies() if c["name"] == "backprop_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert stack.tokens["bob"] not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    # the cookie reads the API for the dashboard, but never writes through it
    assert page.request.get("/v1/jobs").status == 200
    refused = page.request.post("/v1/jobs", data={"structure": [2, 1]})
    assert refused.status == 401
    # a form without the CSRF token is refused
    assert page.request.post("/sign-out", form={}).status == 400
    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    assert page.request.get("/v1/jobs").status == 401
    context.close()


def test_a_running_job_moves_in_the_list_and_its_chart_gains_a_point_per_epoch(signed_in, stack):
    job = stack.client("alice").submit(slow_job())
    page = signed_in.new_page()
    page.goto("/")
    row = page.locator(f"tr[data-job-id='{job['id']}']")
    expect(row).to_be_visible(timeout=5000)  # the list found it without a reload
    progress = row.locator("progress")
    expect(row.locator(".status")).to_have_text("running", timeout=30_000)
    first = int(progress.get_attribute("value"))
    page.wait_for_function(  # the row is redrawn by the list's script, not reloaded
        "([id, first]) => document.querySelector(`tr[data-job-id='${id}'] progress`).value > first",
        arg=[job["id"], first],
        timeout=30_000,
    )
    expect(row.locator(".epochs")).not_to_have_text(f"{first}/400")

    row.locator("a").click()
    expect(page).to_have_url(f"{stack.base}/jobs/{job['id']}")
    expect(page.locator("#status")).to_have_text("running")
    expect(page.locator("#not-continuable")).to_contain_text("the job is running")
    seen = []
    for _ in range(3):  # three growths, each one point per finished epoch
        before = points(page)
        page.wait_for_function(
            "n => Number(document.querySelector('#cost-chart').dataset.points) > n",
            arg=before,
            timeout=30_000,
        )
        count, dots, shown = page.evaluate(
            "[Number(document.querySelector('#cost-chart').dataset.points),"
            " document.querySelectorAll('#cost-chart circle.point').length,"
            " document.querySelector('#progress').value]"
        )
        assert count == dots == shown  # as many points as epochs the page says are done
        seen.append(count)
    assert seen == sorted(set(seen))

    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("cancelled", timeout=30_000)
    expect(page.locator("#cancel")).to_have_count(0)
    expect(page.locator("#continue-form")).to_be_visible()  # a cancelled job carries on
    ended = stack.client("alice").job(job["id"])
    assert ended["status"] == "cancelled"
    rows = stack.client("alice").get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    expect(page.locator("#cost-chart")).to_have_attribute("data-points", str(len(rows)))
    assert len(rows) == ended["progress"]["epoch"] >= seen[-1]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    expect(page.locator("#history")).to_contain_text("cancel")
    page.close()


def two_classes(rows: int = 240) -> str:
    """A CSV of two interleaved half circles: x1, x2, then the one-hot class."""
    rng = np.random.default_rng(11)
    angle = rng.uniform(0, np.pi, rows)
    label = rng.integers(0, 2, rows)
    x1 = np.where(label, 1 - np.cos(angle), np.cos(angle)) + rng.normal(0, 0.1, rows)
    x2 = np.where(label, 0.5 - np.sin(angle), np.sin(angle)) + rng.normal(0, 0.1, rows)
    table = np.column_stack([x1, x2, np.eye(2)[label]])
    out = io.StringIO()
    np.savetxt(out, table, fmt="%.4f", delimiter=",")
    return out.getvalue()


def test_a_job_submitted_from_the_form_trains_and_shows_curves_weights_and_model(signed_in, stack):
    page = signed_in.new_page()
    page.goto("/submit")
    # a bad form first: every error named, nothing stored
    page.fill("input[name=structure]", "2,8,2")
    page.fill("textarea[name=csv]", "0,1,0\n1,0,1\n")
    page.click("#submit-job")
    expect(page.locator("#form-errors")).to_contain_text("csv")
    expect(page.locator("#form-errors")).to_contain_text("expected 4 columns")
    page.fill("input[name=name]", "two half circles")
    page.fill("input[name=structure]", "2,16,2")
    page.fill("input[name=epochs]", "60")
    page.fill("input[name=learning_rate]", "1.5")
    page.fill("input[name=batch_size]", "8")
    page.fill("input[name=seed]", "7")
    page.fill("input[name=validation_split]", "0.25")
    page.check("input[name=verify_gradients]")
    page.select_option("select[name=optimizer]", "nesterov")
    page.select_option("select[name=schedule]", "cosine")
    page.fill("input[name=clip_norm]", "5")
    page.fill("input[name=learning_rate]", "0.3")
    page.fill("textarea[name=csv]", two_classes())
    page.click("#submit-job")
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#cost-chart")).to_have_attribute("data-points", "60")
    expect(page.locator("#accuracy-chart")).to_have_attribute("data-points", "60")
    assert page.locator("#accuracy-chart polyline.val").count() == 1
    expect(page.locator("canvas.heatmap")).to_have_count(2)
    expect(page.locator("#gradient-check")).to_contain_text("Theory and practice agree")

    job = stack.client("alice").job(job_id)
    assert job["name"] == "two half circles" and job["structure"] == [2, 16, 2]
    assert job["options"]["validation_split"] == 0.25 and job["options"]["verify_gradients"]
    assert job["options"]["optimizer"]["name"] == "momentum"
    assert job["options"]["optimizer"]["nesterov"] and job["options"]["clip_norm"] == 5.0
    assert job["options"]["schedule"]["name"] == "cosine"
    download = page.request.get(page.locator("#download").get_attribute("href"))
    assert download.status == 200
    model = np.load(io.BytesIO(download.body()))
    assert model["W0"].shape == (2, 16) and model["W1"].shape == (16, 2)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(200)  # the heat maps' last paint
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
    page.close()


def test_a_cancel_without_the_form_token_is_refused_and_another_tenants_job_is_not_found(
    signed_in, stack
):
    job = stack.client("bob").submit({**slow_job(epochs=3), "name": "bob's"})
    page = signed_in.new_page()
    response = page.goto(f"/jobs/{job['id']}")
    assert response.status == 404
    expect(page.locator("main")).to_contain_text("no job")
    assert page.request.post(f"/jobs/{job['id']}/cancel", form={}).status == 400
    mine = stack.client("alice").submit(slow_job(epochs=3))
    forged = page.request.post(
        f"/jobs/{mine['id']}/cancel", form={"csrf_token": "forged"}, max_redirects=0
    )
    assert forged.status == 400
    assert stack.client("alice").wait(mine["id"])["status"] == "succeeded"  # not cancelled
    page.close()


def test_a_sweep_page_follows_the_leaderboard_and_draws_the_objective(signed_in, stack):
    client = stack.client("alice")
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, 300)
    inputs = np.hstack([np.eye(3)[labels], rng.random((300, 1))]) * 0.3 + rng.random((300, 4)) * 0.7
    stored = client.post(
        "/v1/datasets",
        json={"inputs": inputs.round(4).tolist(), "targets": np.eye(3)[labels].tolist()},
    ).json()
    body = {
        "name": "browser sweep",
        "base": {"structure": [4, 32, 3], "epochs": 16, "learning_rate": 1.0,
                 "data": {"dataset_id": stored["id"], "batch_size": 1},
                 "options": {"validation_split": 0.25}},
        "search": {"learning_rate": {"log_uniform": [0.01, 5]},
                   "structure[1]": {"choice": [8, 32]}},
        "trials": 8, "seed": 6, "max_parallel": 1,
        "objective": {"metric": "val_accuracy"},
        "early_stopping": {"min_epochs": 4, "reduction_factor": 2},
    }  # fmt: skip
    sweep = client.post("/v1/sweeps", json=body).json()
    page = signed_in.new_page()
    page.goto("/sweeps")
    page.locator(f"tr[data-sweep-id='{sweep['id']}'] a").click()
    expect(page).to_have_url(f"{stack.base}/sweeps/{sweep['id']}")
    page.evaluate("() => { window.sameDocument = true; }")
    # the leaderboard grows while the page stays the same document (no reload)
    page.wait_for_function(
        "() => window.sameDocument && "
        "document.querySelectorAll('#leaderboard tbody tr[data-status=succeeded]').length >= 1",
        timeout=30_000,
    )
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    page.wait_for_function("() => !window.sameDocument")  # the ended sweep's page, reloaded
    expect(page.locator("#cancel")).to_have_count(0)
    done = client.get(f"/v1/sweeps/{sweep['id']}", params={"limit": 200}).json()
    expect(page.locator("#leaderboard tbody tr")).to_have_count(8)
    shown = page.eval_on_selector_all(
        "#leaderboard tbody tr", "rows => rows.map(r => Number(r.dataset.trial))"
    )
    assert shown == [row["trial"] for row in done["leaderboard"]]
    expect(page.locator("#objective-chart")).to_have_attribute("data-points", "8")
    for path in body["search"]:
        chart = page.locator(f".param-chart[data-path='{path}']")
        expect(chart).to_have_attribute("data-points", "8")
        assert chart.locator("circle.point").count() == 8
    stopped = sum(row["stopped_early"] for row in done["leaderboard"])
    assert page.locator("#objective-chart circle.point.val").count() == stopped
    expect(page.locator("#summary")).to_contain_text("8 of 8 trials ended")
    SWEEP_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SWEEP_SCREENSHOT), full_page=True)
    page.click("#best")  # the best trial's page: its values and ASHA's figures
    expect(page).to_have_url(f"{stack.base}/jobs/{done['best']['job_id']}")
    expect(page.locator("#trial-of")).to_contain_text(f"Trial {done['best']['trial']} of")
    expect(page.locator("#rungs tbody tr")).to_have_count(len(done["best"]["rungs"]))
    page.close()


def test_a_finished_job_and_an_ended_sweep_are_deleted_after_asking(signed_in, stack):
    client = stack.client("alice")
    done = client.wait(client.submit({**slow_job(epochs=2), "name": "to delete"})["id"])
    page = signed_in.new_page()
    page.goto(f"/jobs/{done['id']}")
    page.click("#delete")  # a page that asks first; keeping it changes nothing
    expect(page).to_have_url(f"{stack.base}/jobs/{done['id']}/delete")
    expect(page.locator("#what-goes")).to_contain_text("to delete")
    page.click("#keep")
    expect(page).to_have_url(f"{stack.base}/jobs/{done['id']}")
    assert client.get(f"/v1/jobs/{done['id']}").status_code == 200
    page.click("#delete")
    page.click("#confirm-delete")
    expect(page).to_have_url(f"{stack.base}/")
    assert client.get(f"/v1/jobs/{done['id']}").status_code == 404
    expect(page.locator(f"tr[data-job-id='{done['id']}']")).to_have_count(0)

    running = client.submit(slow_job(epochs=400))  # no button, and the delete is refused
    client.wait(running["id"], statuses=("running",))
    page.goto(f"/jobs/{running['id']}")
    expect(page.locator("#cancel")).to_have_count(1)
    expect(page.locator("#delete")).to_have_count(0)
    page.goto(f"/jobs/{running['id']}/delete")
    page.click("#confirm-delete")
    expect(page.locator("main .error")).to_contain_text("cancel it first")
    assert client.post(f"/v1/jobs/{running['id']}/cancel").status_code in (200, 202)

    xor = {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]]}
    stored = client.post("/v1/datasets", json=xor).json()
    body = {
        "name": "sweep to delete",
        "base": {"structure": [2, 3, 1], "epochs": 3, "learning_rate": 2.0,
                 "data": {"dataset_id": stored["id"]}},
        "search": {"learning_rate": {"choice": [1.0, 3.0]}},
        "method": "grid", "objective": {"metric": "cost"},
    }  # fmt: skip
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep = response.json()
    page.goto(f"/sweeps/{sweep['id']}")
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    trial_ids = [j["id"] for j in client.get(f"/v1/jobs?sweep={sweep['id']}").json()["jobs"]]
    assert len(trial_ids) == 2
    page.goto(f"/jobs/{trial_ids[0]}")  # a trial goes with its sweep, never alone
    expect(page.locator("#trial-of")).to_be_visible()
    expect(page.locator("#delete")).to_have_count(0)
    page.goto(f"/sweeps/{sweep['id']}")
    page.click("#delete")
    expect(page.locator("#what-goes")).to_contain_text("2 trials")
    page.click("#confirm-delete")
    expect(page).to_have_url(f"{stack.base}/sweeps")
    assert client.get(f"/v1/sweeps/{sweep['id']}").status_code == 404
    assert [client.get(f"/v1/jobs/{t}").status_code for t in trial_ids] == [404, 404]
    forged = page.request.post(f"/jobs/{running['id']}/delete", form={}, max_redirects=0)
    assert forged.status == 400  # no form token: refused
    page.close()


def test_a_running_sweep_is_cancelled_from_its_page(signed_in, stack):
    client = stack.client("alice")
    rng = np.random.default_rng(4)
    rows = {"inputs": rng.random((200, 2)).round(3).tolist(), "targets": [[1]] * 200}
    stored = client.post("/v1/datasets", json=rows).json()
    body = {
        "base": {"structure": [2, 3, 1], "epochs": 5_000, "learning_rate": 2.0,
                 "data": {"dataset_id": stored["id"], "batch_size": 1}},
        "search": {"learning_rate": {"choice": [1.0, 2.0, 3.0]}},
        "method": "grid", "objective": {"metric": "cost"}, "max_parallel": 2,
    }  # fmt: skip
    sweep = client.post("/v1/sweeps", json=body).json()
    page = signed_in.new_page()
    page.goto(f"/sweeps/{sweep['id']}")
    page.wait_for_selector("#leaderboard tbody tr[data-status=running]")
    expect(page.locator("#delete")).to_have_count(0)  # not while it runs
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("cancelled")
    trials = client.get(f"/v1/jobs?sweep={sweep['id']}").json()["jobs"]
    assert len(trials) == 2  # the third was never released
    assert {client.wait(t["id"])["status"] for t in trials} == {"cancelled"}
    page.close()


def test_data_sets_are_listed_and_deleted_after_asking_unless_a_job_uses_one(signed_in, stack):
    client = stack.client("alice")
    rng = np.random.default_rng(8)
    rows = {"inputs": rng.random((200, 32)).round(3).tolist(),
            "targets": np.eye(2)[rng.integers(0, 2, 200)].tolist()}  # fmt: skip
    spare = client.post("/v1/datasets", json={**rows, "name": "spare rows"}).json()
    other = {**rows, "targets": rows["targets"][::-1]}  # the same rows again are the same set
    busy = client.post("/v1/datasets", json={**other, "name": "busy rows"}).json()
    data = {"dataset_id": busy["id"], "batch_size": 1}
    job = client.submit({**slow_job(epochs=400), "data": data})
    page = signed_in.new_page()
    page.goto("/")
    page.click("nav >> text=Data sets")
    expect(page).to_have_url(f"{stack.base}/datasets")
    row = page.locator(f"tr[data-dataset-id='{spare['id']}']")
    expect(row).to_contain_text("spare rows")
    expect(row).to_contain_text("200 × 32 float64")
    bob = stack.client("bob").post("/v1/datasets", json={**rows, "name": "bob's rows"}).json()
    page.reload()  # another tenant's data set is neither listed nor deletable
    expect(page.locator(f"tr[data-dataset-id='{bob['id']}']")).to_have_count(0)
    assert page.goto(f"/datasets/{bob['id']}/delete").status == 404

    page.goto("/datasets")
    page.locator(f"tr[data-dataset-id='{busy['id']}'] a.delete").click()
    page.click("#confirm-delete")  # a queued or running job trains on it: refused, and why
    expect(page.locator("main .error")).to_contain_text(job["id"])
    assert client.get(f"/v1/datasets/{busy['id']}").status_code == 200
    page.goto("/datasets")
    row.locator("a.delete").click()
    expect(page.locator("#what-goes")).to_contain_text("200 samples")
    page.click("#confirm-delete")
    expect(page).to_have_url(f"{stack.base}/datasets")
    expect(page.locator(f"tr[data-dataset-id='{spare['id']}']")).to_have_count(0)
    assert client.get(f"/v1/datasets/{spare['id']}").status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
    page.close()


def small_job(name: str, epochs: int, **options) -> dict:
    """Sixty rows of three classes: a few epochs train in a blink."""
    rng = np.random.default_rng(21)
    inputs = rng.random((60, 4)).round(3)
    targets = np.eye(3)[rng.integers(0, 3, 60)]
    return {
        "name": name,
        "structure": [4, 6, 3],
        "epochs": epochs,
        "learning_rate": 1.0,
        "seed": 7,
        "data": {"inputs": inputs.tolist(), "targets": targets.tolist(), "batch_size": 10},
        "options": options,
    }


def compared_rows(client, job_id: str) -> dict[int, dict]:
    """A job's metrics rows by epoch, with what a diff compares of them."""
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["metrics"]
    return {r["epoch"]: {name: r.get(name) for name in COMPARED} for r in rows}


def spec_fields(page: Page) -> list[str]:
    return page.eval_on_selector_all(
        "#spec-diff tbody tr", "rows => rows.map(r => r.dataset.field)"
    )


def cell(value) -> str:
    """A stored metric as the diff page shows it: every digit, – for none."""
    return "–" if value is None else str(value)


def compare(page: Page, job_id: str, other_id: str) -> None:
    """The job's page, then its compare form with the other job's id."""
    page.goto(f"/jobs/{job_id}")
    page.fill("#compare-form input[name=other]", other_id)
    page.click("#compare")
    expect(page).to_have_url(re.compile(rf"/jobs/{job_id}/diff\?other={other_id}$"))


def test_two_jobs_are_compared_down_to_the_epoch_where_they_part(signed_in, stack):
    client = stack.client("alice")
    step = {"name": "step", "step_size": 2, "gamma": 0.5}
    plain = client.submit(small_job("plain", epochs=5))["id"]
    stepped = client.submit(small_job("stepped", epochs=5, schedule=step))["id"]
    assert client.wait(plain)["status"] == client.wait(stepped)["status"] == "succeeded"
    page = signed_in.new_page()
    page.goto(f"/jobs/{plain}")  # the tenant's latest jobs are offered
    offered = page.eval_on_selector_all("#recent-jobs option", "os => os.map(o => o.value)")
    assert stepped in offered and plain not in offered
    compare(page, plain, stepped)

    answer = client.get(f"/v1/jobs/{plain}/diff", params={"other": stepped}).json()
    fields = spec_fields(page)
    assert fields == [d["field"] for d in answer["spec"]] and "options.schedule" in fields
    schedule = page.locator("#spec-diff tr[data-field='options.schedule'] td")
    expect(schedule.nth(1)).to_have_text("–")  # the plain job has none
    expect(schedule.nth(2)).to_contain_text('"step_size": 2')

    # the first epoch whose stored rows differ: the step's first cut, after step_size epochs
    mine, theirs = compared_rows(client, plain), compared_rows(client, stepped)
    parted = next(e for e in sorted(mine) if mine[e] != theirs[e])
    assert parted == step["step_size"] + 1
    expect(page.locator("#first-divergent")).to_have_text(str(parted))
    expect(page.locator("#epochs-compared")).to_contain_text(f"of the {len(mine)} epochs")
    shown = page.eval_on_selector_all(
        "#divergent-metrics tbody tr",
        "rows => rows.map(r => [r.dataset.metric, r.cells[1].textContent, r.cells[2].textContent])",
    )
    assert shown == [
        [name, cell(mine[parted][name]), cell(theirs[parted][name])] for name in COMPARED
    ]
    assert theirs[parted]["learning_rate"] == step["gamma"] * mine[parted]["learning_rate"]
    expect(page.locator("tr[data-metric=learning_rate]")).to_have_class("differs")
    expect(page.locator("#weights-equal")).to_contain_text("Different")
    assert answer["weights_equal"] is False

    # an id that is none, no job, or another tenant's: the error page, never a 500
    bobs = stack.client("bob").submit(small_job("bob's", epochs=1))["id"]
    for other, status, says in [
        ("", 400, "No job to compare with"),
        ("not-an-id", 400, "'not-an-id' is not a job id"),
        ("00000000-0000-4000-8000-000000000000", 404, "There is no job"),
        (bobs, 404, f"There is no job '{bobs}'"),
    ]:
        response = page.goto(f"/jobs/{plain}/diff?other={other}")
        assert response.status == status, other
        expect(page.locator("main .error")).to_contain_text(says)
    page.close()


def test_a_job_continued_from_its_page_links_its_parent_and_equals_one_long_job(signed_in, stack):
    client = stack.client("alice")
    short = client.submit(small_job("short", epochs=3))["id"]
    whole = client.submit(small_job("whole", epochs=5))["id"]
    assert client.wait(short)["status"] == client.wait(whole)["status"] == "succeeded"
    page = signed_in.new_page()
    page.goto(f"/jobs/{short}")
    expect(page.locator("#continued-from")).to_have_count(0)
    # more epochs than the server allows in one run: refused, and why
    page.fill("#continue-form input[name=epochs]", str(10**9))
    with page.expect_navigation() as refused:
        page.click("#continue")
    assert refused.value.status == 422
    expect(page.locator("main .error")).to_contain_text("epochs: the whole run would be")
    assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]][:2] == [whole, short]

    page.goto(f"/jobs/{short}")
    page.fill("#continue-form input[name=epochs]", "2")
    page.click("#continue")
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    child = page.url.rsplit("/", 1)[1]
    assert child != short
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    ended = client.job(child)
    assert ended["continued_from"] == short and ended["progress"]["epochs"] == 5
    expect(page.locator("#continued-from")).to_contain_text(short)

    compare(page, child, whole)  # bit for bit the job that trained 5 epochs at once
    answer = client.get(f"/v1/jobs/{child}/diff", params={"other": whole}).json()
    fields = spec_fields(page)
    assert fields == [d["field"] for d in answer["spec"]]
    assert "continued_from" in fields and "epochs" not in fields
    assert compared_rows(client, child) == compared_rows(client, whole)
    expect(page.locator("#first-divergent")).to_have_text("never")
    expect(page.locator("#divergent-metrics")).to_have_count(0)
    expect(page.locator("#weights-equal")).to_contain_text("Bitwise equal")
    assert answer["weights_equal"] is True

    page.goto(f"/jobs/{child}")
    page.click("#continued-from a >> nth=0")  # the parent's page
    expect(page).to_have_url(f"{stack.base}/jobs/{short}")
    page.close()


def store_classes(client, samples: int, seed: int) -> str:
    """A stored data set of three noisy one-hot classes in four columns."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, samples)
    inputs = np.hstack([np.eye(3)[labels], rng.random((samples, 1))]) * 0.6
    inputs += rng.random((samples, 4)) * 0.4
    body = {"inputs": inputs.round(4).tolist(), "targets": np.eye(3)[labels].tolist()}
    response = client.post("/v1/datasets", json=body)
    assert response.status_code in (200, 201), response.text  # 200: stored already
    return response.json()["id"]


def sweep_base(dataset_id: str, epochs: int) -> dict:
    return {
        "structure": [4, 6, 3],
        "epochs": epochs,
        "learning_rate": 1.0,
        "data": {"dataset_id": dataset_id, "batch_size": 10},
        "options": {"validation_split": 0.25},
    }


def test_a_replicated_sweep_shows_each_configurations_mean_and_spread(signed_in, stack):
    client = stack.client("alice")
    body = {
        "name": "replicated",
        "base": sweep_base(store_classes(client, 150, 3), epochs=3),
        "search": {"learning_rate": {"log_uniform": [0.3, 5]}},
        "trials": 2, "replicates": 3, "seed": 8, "objective": {"metric": "val_accuracy"},
    }  # fmt: skip
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep = response.json()
    page = signed_in.new_page()
    page.goto(f"/sweeps/{sweep['id']}")
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    page.reload()
    done = client.get(f"/v1/sweeps/{sweep['id']}").json()
    rows = page.locator("#configurations tbody tr")
    expect(rows).to_have_count(len(done["configurations"]))
    shown = page.eval_on_selector_all(
        "#configurations tbody tr",
        "rows => rows.map(r => [Number(r.dataset.configuration), Number(r.dataset.mean),"
        " Number(r.dataset.std)])",
    )
    assert [c for c, _, _ in shown] == [c["configuration"] for c in done["configurations"]]
    means = [mean for _, mean, _ in shown]
    assert means == sorted(means, reverse=True)  # the best mean first
    for (_, mean, std), row, configuration in zip(shown, rows.all(), done["configurations"]):
        jobs = [client.job(job_id) for job_id in configuration["job_ids"]]
        values = [j["metrics"]["val_accuracy"] for j in jobs]
        assert len(values) == body["replicates"] and len({j["seed"] for j in jobs}) == 3
        assert mean == pytest.approx(np.mean(values))
        assert std == pytest.approx(np.std(values, ddof=1))
        expect(row.locator(".replicates")).to_contain_text("3 of 3")
        expect(row.locator(".mean")).to_have_text(re.compile(r"^[0-9.]+ ± [0-9.e-]+$"))
        params = configuration["params"]["learning_rate"]
        assert all(j["params"]["learning_rate"] == params for j in jobs)
        expect(row.locator("a")).to_have_count(3)
    expect(page.locator("#summary")).to_contain_text(f"{done['trials']} of {done['trials']} trials")
    page.close()


def test_an_ended_sweep_is_continued_from_its_page(signed_in, stack):
    client = stack.client("alice")
    body = {
        "name": "to continue",
        "base": sweep_base(store_classes(client, 90, 4), epochs=3),
        "search": {"learning_rate": {"log_uniform": [0.3, 5]}},
        "trials": 2, "seed": 5, "objective": {"metric": "val_accuracy"},
    }  # fmt: skip
    sweep = client.post("/v1/sweeps", json=body).json()
    page = signed_in.new_page()
    page.goto(f"/sweeps/{sweep['id']}")
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    page.reload()
    with page.expect_navigation() as refused:  # nothing to do: refused, and why
        page.click("#continue")
    assert refused.value.status == 409
    expect(page.locator("main .error")).to_contain_text("no cancelled trial to resume")

    page.goto(f"/sweeps/{sweep['id']}")
    best = client.get(f"/v1/sweeps/{sweep['id']}").json()["best"]
    page.fill("#continue-form input[name=add_trials]", "1")
    page.fill("#continue-form input[name=extend_top]", "1")
    page.fill("#continue-form input[name=extend_epochs]", "2")
    page.click("#continue")
    expect(page).to_have_url(f"{stack.base}/sweeps/{sweep['id']}")
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    page.reload()
    expect(page.locator("#leaderboard tbody tr")).to_have_count(4)
    done = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert done["trials"] == 4 and done["counts"]["succeeded"] == 4
    trials = client.get("/v1/jobs", params={"sweep": sweep["id"]}).json()["jobs"]
    extended = [client.job(t["id"]) for t in trials if t["continued_from"]]
    assert [(j["continued_from"], j["progress"]["epoch"]) for j in extended] == [
        (best["job_id"], best["progress"]["epoch"] + 2)
    ]
    page.close()


def test_a_trial_page_shows_asha_pausing_and_promoting_it(signed_in, stack):
    client = stack.client("alice")
    body = {
        "base": {**sweep_base(store_classes(client, 150, 3), epochs=3), "seed": 4},
        "search": {"learning_rate": {"choice": [3.0, 2.0, 1.2, 0.6, 0.3, 0.1]}},
        "method": "grid", "objective": {"metric": "val_cost"}, "max_parallel": 1,
        "early_stopping": {"min_epochs": 1, "reduction_factor": 3, "promotions": True},
    }  # fmt: skip
    sweep = client.post("/v1/sweeps", json=body).json()
    page = signed_in.new_page()
    page.goto(f"/sweeps/{sweep['id']}")
    expect(page.locator("#summary")).to_contain_text("paused")
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    page.close()  # its script reloads it once the sweep ends: a goto meanwhile is aborted
    page = signed_in.new_page()
    trials = client.get("/v1/jobs", params={"sweep": sweep["id"]}).json()["jobs"]
    decisions = []
    for trial in trials:
        rungs = client.job(trial["id"])["rungs"]
        page.goto(f"/jobs/{trial['id']}")
        rows = page.locator("#rungs tbody tr .decision")
        expect(rows).to_have_count(len(rungs))
        for row, rung in zip(rows.all(), rungs):
            expect(row).to_contain_text(rung["decision"])
            expect(row.locator(".promoted")).to_have_count(1 if rung["promoted"] else 0)
            decisions.append((rung["decision"], rung["promoted"] is not None))
    # six trials at rung 0 keep two (6 // 3): a paused one was promoted
    assert ("pause", False) in decisions and ("pause", True) in decisions
    page.close()
