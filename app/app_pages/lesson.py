"""Lesson page: why GCCS looked robust. Five narrated steps on the same samples of one GCCS model; ``?step=N`` links one."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import exports, figures, lesson_data, lesson_figures, registry, state
from gccs_core.lesson import STRONG, UNDERFLOW_GAP, WEAK
from gccs_core.views import panels_table

STEPS = ("The claim: far from every boundary", "A cross-entropy attack stalls", "Why: the gradient is exactly zero",
         "A margin attack does not stall", "What the evaluations report")

st.title("Lesson: why GCCS looked robust")
models = lesson_data.lesson_models()
if not models:
    st.warning("No GCCS model is available: train one on the Train page (loss gccs) or upload one.")
    st.stop()
keys = [m.key for m in models]
labels = {m.key: f"{m.label} ({m.dataset})" for m in models}

# -- state: URL ?step=N (and ?lesson_model=...) on the first visit of the session, defaults otherwise ----------------
if not st.session_state.get("_lesson_url_loaded"):
    st.session_state["_lesson_url_loaded"] = True
    text = st.query_params.get("step")
    if text is not None:
        try:
            step = int(text)
            if not 1 <= step <= len(STEPS):
                raise ValueError
            st.session_state["lesson_step"] = step
        except ValueError:
            st.warning(f"step={text!r} is not a step of this lesson: steps are 1 to {len(STEPS)}. Showing step 1.")
    wanted = st.query_params.get("lesson_model")
    if wanted in keys:
        st.session_state["ls_model"] = wanted
if st.session_state.get("ls_model") not in keys:
    st.session_state["ls_model"] = lesson_data.default_model(models)
for key, value in lesson_data.DEFAULTS.items():
    st.session_state.setdefault(key, value)
if st.session_state.get("lesson_step") not in range(1, len(STEPS) + 1):
    st.session_state["lesson_step"] = 1

if state.teacher():
    st.markdown("<style>.lesson-text p, .lesson-text li{font-size:1.45rem!important;line-height:1.5}</style>",
                unsafe_allow_html=True)

entry = registry.find_model(st.session_state["ls_model"])
assert entry is not None
n_classes = registry.num_classes(entry.dataset)
if not 0 <= int(st.session_state["ls_class"]) < n_classes:
    st.session_state["ls_class"] = 0
with state.controls("Lesson settings"):
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    c1.selectbox("GCCS model", keys, key="ls_model", format_func=labels.get)
    c2.selectbox("Class attacked", list(range(n_classes)), key="ls_class")
    c3.slider("eps (L∞)", 0.05, 0.3, key="ls_eps", step=0.05)
    c4.number_input("Steps", 5, 50, key="ls_steps")


def _go(delta: int) -> None:
    st.session_state["lesson_step"] = min(len(STEPS), max(1, int(st.session_state["lesson_step"]) + delta))


nav_prev, nav_steps, nav_next = st.columns([1, 8, 1])
nav_prev.button("◀ Back", key="lesson_prev", on_click=_go, args=(-1,), disabled=st.session_state["lesson_step"] == 1,
                width="stretch")
nav_steps.radio("Step", list(range(1, len(STEPS) + 1)), key="lesson_step", horizontal=True, label_visibility="collapsed",
                format_func=lambda k: f"{k}. {STEPS[k - 1]}")
nav_next.button("Next ▶", key="lesson_next", on_click=_go, args=(1,), type="primary",
                disabled=st.session_state["lesson_step"] == len(STEPS), width="stretch")
step = int(st.session_state["lesson_step"])
st.query_params["step"] = str(step)
st.query_params["lesson_model"] = entry.key

cls, eps, steps = int(st.session_state["ls_class"]), float(st.session_state["ls_eps"]), int(st.session_state["ls_steps"])
try:
    with st.spinner(f"Attacking {lesson_data.N_SAMPLES} samples of class {cls} twice on {entry.label}…"):
        les, idx = lesson_data.lesson(entry, cls, eps, steps, lesson_data.N_SAMPLES)
except (ValueError, RuntimeError, OSError, ImportError) as err:
    state.show_error(err, "The lesson could not run")
    st.stop()

n, y_cls, t_cls = len(les.y), les.plane.y, les.plane.t
weak_ok, strong_ok, zero = int(les.weak.correct.sum()), int(les.strong.correct.sum()), int(les.zero_grad.sum())
sigma = les.sigma or 1.0
dist = -les.weak.distance[0]
height = state.plot_height()


def pct(k: int) -> str:
    return f"{100 * k / max(n, 1):.0f}%"


def say(text: str) -> None:
    st.markdown(f"<div class='lesson-text'>\n\n{text}\n\n</div>", unsafe_allow_html=True)


def preset_attack(objective: str, label: str, key: str) -> None:
    """A button that opens the Attack page on this model, these samples and this plane, with ``objective``."""
    if st.button(label, key=key, icon=":material/open_in_new:"):
        ce = next((m.key for m in registry.list_models(entry.dataset) if m.loss == "ce"), entry.key)
        state.set_pending(dataset=entry.dataset, left=entry.key, right=ce, method="decision", plane_y=y_cls, plane_t=t_cls,
                          attack="pgd", objective=objective, eps=eps, steps=steps, samples="one class", sample_class=cls,
                          n_samples=n, autorun_attack=True)
        st.switch_page(st.session_state["_pages"]["attack"])


def show_animation(which: tuple[str, ...], key: str) -> None:
    fig = figures.animation_figure(lesson_data.panels(entry, les, which), les_names, [f"step {t}" for t in
                                   range(les.steps + 1)], "pred", height)
    st.plotly_chart(lesson_figures.at_last_frame(fig), key=key, width="stretch", theme=None, config={"displaylogo": False})


les_names = [str(k) for k in range(n_classes)]
st.header(f"Step {step} of {len(STEPS)}: {STEPS[step - 1]}")

if step == 1:
    say(f"These are {n} test images of the digit **{y_cls}**, seen by **{entry.label}** in the exact *decision plane* "
        f"of classes {y_cls} and {t_cls}: the horizontal axis is the normal of the model's {y_cls}|{t_cls} decision "
        f"boundary (the dashed line), so each point's x is its exact latent distance to it. The median distance is "
        f"**{np.median(dist):.1f}**, that is **{np.median(dist) / sigma:.1f} σ** of the class Gaussians (ellipses: 1σ "
        "and 2σ). By this picture the model should be very hard to fool, and an evaluation that only runs "
        "cross-entropy attacks seems to agree. The next steps check that claim.")
    fig = figures.animation_figure(lesson_data.panels(entry, les, ("weak",), clean=True), les_names, ["clean"], "pred",
                                   height)
    st.plotly_chart(fig, key="lesson_clean", width="stretch", theme=None, config={"displaylogo": False})
    m1, m2, m3 = st.columns(3)
    m1.metric("clean accuracy on these samples", pct(int((les.clean_pred == les.y).sum())))
    m2.metric("median latent distance to the boundary", f"{np.median(dist):.2f}")
    m3.metric("in units of σ", f"{np.median(dist) / sigma:.1f} σ")
    st.caption(f"Chart: {n} points of class {y_cls}, all left of the dashed {y_cls}|{t_cls} boundary; stars are the "
               f"two classes' simplex vertices.")
elif step == 2:
    say(f"**{WEAK['label']}**: {les.steps} steps of projected gradient ascent on the cross-entropy, each pixel moved by "
        f"at most eps = {les.eps:g}, started from the clean image as 2020-era evaluations did. After the attack "
        f"**{weak_ok} of {n}** images ({pct(weak_ok)}) are still classified correctly. The chart shows the last step "
        "(▶ Play replays it; the faint lines are the paths): many points never moved at all.")
    show_animation(("weak",), "lesson_weak")
    st.caption(f"Chart: {WEAK['label']} in the {y_cls}|{t_cls} decision plane; {weak_ok}/{n} points still on the "
               f"{y_cls} side and correct after {les.steps} steps; a thick ring marks a misclassified point.")
    preset_attack("ce", "Open this attack on the Attack page", "lesson_preset_ce")
elif step == 3:
    stuck_ok = int(les.weak.correct[les.zero_grad].sum())
    say(f"A GCCS score is −‖z − μₖ‖² / 2σ². Near its vertex a sample's score beats the next class by a huge gap, and "
        f"float32 softmax then computes exp(−gap) for every other class: beyond a gap of 149·ln 2 ≈ "
        f"**{UNDERFLOW_GAP:.1f}** that is below the smallest float32 number, so it is exactly 0. The cross-entropy "
        f"gradient (softmax minus one-hot) is then **exactly zero**: here for **{zero} of {n}** samples ({pct(zero)}). "
        f"PGD steps by sign(0) = 0, so those samples never move, and {stuck_ok} of them stay correct. That is "
        "*gradient masking*: the robustness is a numerical artefact of the loss the attack used, not of the model.")
    st.plotly_chart(lesson_figures.gap_figure(les.score_gap, les.zero_grad, UNDERFLOW_GAP, height=min(height, 520)),
                    key="lesson_gaps", width="stretch", config={"displaylogo": False})
    m1, m2 = st.columns(2)
    m1.metric("exactly zero CE input gradient", f"{zero}/{n} ({pct(zero)})")
    m2.metric("of those, correct after PGD-CE", f"{stuck_ok}/{zero}")
    st.caption(f"Chart: histogram of the clean score gap; the {zero} samples right of the dashed line at "
               f"{UNDERFLOW_GAP:.1f} have an exactly zero cross-entropy gradient.")
elif step == 4:
    say(f"Same samples, same model, same eps and steps, now attacked on the **margin** max_(k≠y) s_k − s_y "
        f"({STRONG['label']}): its gradient is the difference of two score gradients, which never vanishes. "
        f"**{strong_ok} of {n}** stay correct ({pct(strong_ok)}), against **{weak_ok} of {n}** for cross-entropy "
        f"(left). The points cross the dashed boundary although their input perturbation stays within eps = "
        f"{les.eps:g} (hover a point): the latent margin is large, the input distance is small. Points that end as a "
        f"class other than {t_cls} cross that class's boundary, which this plane does not draw; their colour shows "
        "the class they reached.")
    show_animation(("weak", "strong"), "lesson_both")
    m1, m2, m3 = st.columns(3)
    m1.metric(WEAK["label"], f"{weak_ok}/{n} correct")
    m2.metric(STRONG["label"], f"{strong_ok}/{n} correct", delta=f"{strong_ok - weak_ok} samples", delta_color="inverse")
    m3.metric("largest input perturbation", f"{float(les.strong.linf.max()):.3f} ≤ {les.eps:g}")
    st.caption(f"Chart: left {WEAK['label']} ({weak_ok}/{n} still correct), right {STRONG['label']} ({strong_ok}/{n}), "
               f"both in the {y_cls}|{t_cls} decision plane at the last step.")
    preset_attack("margin", "Open the margin attack on the Attack page", "lesson_preset_margin")
    both = lesson_data.panels(entry, les, ("weak", "strong"))
    exports.download_row("dl_lesson", figures.animation_figure(both, les_names, [f"step {t}" for t in range(les.steps + 1)],
                                                               "pred", height),
                         lambda: panels_table(both, idx), f"lesson-{entry.name}-eps{les.eps:g}")
else:
    say("What an evaluation prints depends on its attacks. The **weak** protocol runs what a 2020 paper typically ran "
        "(cross-entropy attacks); the **strong** one takes, per example, the worst case over margin, DLR, APGD and "
        "gradient-free attacks. The chart puts both side by side, with the gap labelled: first these samples under "
        "this lesson's two attacks, then the model's shipped robustness report, then the study's results for a "
        "model of the same recipe where they exist. A cross-entropy attack with random starts and restarts (the "
        "report's PGD-CE, APGD-CE) escapes part of the masking, so the report's gap can be smaller than this lesson's.")
    try:
        with st.spinner("Sweeping eps on these samples…"):
            readings, notes = lesson_data.readings(entry, les, idx)
        st.plotly_chart(lesson_figures.protocol_figure(readings, height=min(height, 560)), key="lesson_protocols",
                        width="stretch", config={"displaylogo": False})
        parts = []
        for r in readings:
            gaps = [g for g in r["gap"] if g is not None]
            worst = f"largest gap {100 * max(gaps):.0f} points" if gaps else "no gap measurable yet"
            parts.append(f"{r['label']}: weak = {r['weak_means']}, strong = {r['strong_means']}; {worst}")
        st.caption("Chart: " + ". ".join(parts) + ".")
        for note in notes:
            st.caption(f"Note: {note}")
    except (ValueError, RuntimeError, OSError, ImportError) as err:
        state.show_error(err, "The weak/strong readings are unavailable")
    say("**Take-away.** (1) Never trust cross-entropy attacks alone on a nearest-vertex head. (2) Check the fraction "
        "of exactly zero cross-entropy gradients (every robustness report here states it and flags it above 5%). "
        "(3) Report the per-example worst case over margin, DLR and APGD attacks, as the Compare page does.")
    if st.button("Open the Compare page", key="lesson_compare", icon=":material/leaderboard:"):
        state.set_pending(dataset=entry.dataset)
        st.switch_page(st.session_state["_pages"]["compare"])
for note in les.notes:
    st.caption(f"Note: {note}")
