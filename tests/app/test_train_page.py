"""Train page (AppTest): training runs in a worker thread; Stop ends it after the current epoch with a usable
checkpoint, Continue adds epochs from that checkpoint, and the overlay draws the curves of several runs."""

from __future__ import annotations

import time
from pathlib import Path

from apptest import errors, run_app, spec_by_trace, specs, trace, wait_training

from gccs_core.checkpoint import MODEL_FILE, TRAINING_FILE
from gccs_core.files import read_checkpoint_header


def wait_epochs(at, n: int, timeout: float = 120.0) -> None:
    job = at.session_state["train_job"]
    deadline = time.monotonic() + timeout
    while job.epochs_done < n and job.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_stop_keeps_a_checkpoint_and_continue_adds_epochs(pretrained):
    at = run_app(page="train")
    at.text_input(key="tr_name").set_value("steer")
    at.number_input(key="tr_epochs").set_value(50)
    at.button(key="train_start").click().run()
    assert not at.exception and not errors(at), errors(at)
    assert at.session_state["train_job"].running
    assert at.button(key="train_start").disabled  # the form is locked while the worker trains
    wait_epochs(at, 1)
    at.button(key="train_stop").click().run()
    assert any("Stopping after the current epoch" in i.value for i in at.info) or not at.session_state["train_job"].running
    at = wait_training(at)
    assert not at.exception and not errors(at), errors(at)
    result = at.session_state["train_result"]
    done = result["epochs"]
    assert result["stopped"] and 1 <= done < 50
    assert any(f"stopped after {done} of 50 epochs" in s.value for s in at.success)
    run = Path(result["out_dir"])
    kind, meta = read_checkpoint_header(run / TRAINING_FILE)
    assert kind == "training" and meta["epoch"] == done and meta["complete"] is False
    assert read_checkpoint_header(run / MODEL_FILE)[0] == "model"
    anim = spec_by_trace(at, "moving 1")
    assert len(anim["frames"]) == done

    at.number_input(key="tr_more").set_value(2)
    at.button(key="train_continue").click().run()
    assert not at.exception and not errors(at), errors(at)
    at = wait_training(at)
    assert not at.exception and not errors(at), errors(at)
    more = at.session_state["train_result"]
    assert more["out_dir"] == str(run) and more["epochs"] == done + 2 and not more["stopped"]
    assert [h["epoch"] for h in more["history"]] == list(range(1, done + 3))
    assert read_checkpoint_header(run / TRAINING_FILE)[1]["epoch"] == done + 2
    assert len(spec_by_trace(at, "moving 1")["frames"]) == done + 2  # the earlier epochs' frames kept


def test_overlay_draws_the_curves_of_both_runs(pretrained):
    at = run_app(page="train")
    at.text_input(key="tr_name").set_value("ov")
    at.number_input(key="tr_epochs").set_value(3)
    at.button(key="train_start").click().run()
    at = wait_training(at)
    assert not at.exception and not errors(at), errors(at)
    options = at.multiselect(key="tr_overlay").options
    mine = next(o for o in options if o.startswith("ov "))
    ce = next(o for o in options if o.startswith("digits-ce"))
    assert at.multiselect(key="tr_overlay").value == [mine, ce]  # the new GCCS run against cross-entropy at once
    at.multiselect(key="tr_overlay").set_value([mine, ce]).run()
    assert not at.exception and not errors(at), errors(at)
    acc = next(s for s in specs(at) if s["layout"].get("title", {}).get("text") == "test accuracy per epoch")
    assert [d["name"] for d in acc["data"]] == [mine, ce]
    assert trace(acc, mine)["x"] == [1, 2, 3]
    assert trace(acc, mine)["y"] == [h["test_accuracy"] for h in at.session_state["train_result"]["history"]]
    assert len(trace(acc, ce)["x"]) == 2  # the tiny pretrained digits-ce: 2 epochs
    assert trace(acc, mine)["line"]["color"] != trace(acc, ce)["line"]["color"]
    assert trace(acc, mine)["line"]["dash"] != trace(acc, ce)["line"]["dash"]
    loss = next(s for s in specs(at) if s["layout"].get("title", {}).get("text") == "training loss per epoch")
    assert loss["layout"]["yaxis"]["type"] == "log" and len(loss["data"]) == 2
    assert any("Final test accuracy" in c.value and mine in c.value for c in at.caption)


def test_continue_of_a_run_whose_checkpoint_is_gone_is_explained(pretrained):
    import shutil

    at = run_app(page="train")
    at.text_input(key="tr_name").set_value("gone")
    at.number_input(key="tr_epochs").set_value(1)
    at.button(key="train_start").click().run()
    at = wait_training(at)
    shutil.rmtree(at.session_state["train_result"]["out_dir"])
    at.button(key="train_continue").click().run()
    at = wait_training(at)
    assert not at.exception
    assert any("Training failed" in e and "cannot resume" in e for e in errors(at)), errors(at)
    assert not at.button(key="train_start").disabled  # the form is usable again
