"""Learn page: GCCS in the project's words, its geometry, presets, teacher mode and sharing."""

from __future__ import annotations

import streamlit as st

from app import state

st.title("Learn: the Gaussian class-conditional simplex loss")

st.subheader("Presets")
c1, c2, c3 = st.columns(3)
if c1.button("One digit under PGD", key="preset_pgd", width="stretch"):
    state.set_pending(dataset="digits", attack="pgd", eps=0.2, steps=20, objective="ce", samples="one class",
                       sample_class=3, n_samples=1, method="simplex", autorun_attack=True)
    st.switch_page(st.session_state["_pages"]["attack"])
if c2.button("Targeted attack 3 → 8", key="preset_targeted", width="stretch"):
    state.set_pending(dataset="digits", attack="pgd-targeted", target=8, eps=0.25, steps=30, objective="ce",
                       samples="one class", sample_class=3, n_samples=20, method="simplex", autorun_attack=True)
    st.switch_page(st.session_state["_pages"]["attack"])
if c3.button("Train GCCS live", key="preset_train", width="stretch"):
    state.set_pending(tr_dataset="digits", tr_loss="gccs", tr_epochs=5, tr_sigma=1.0, tr_radius=10.0, tr_latent_dim=16,
                       tr_lam=0.0, tr_adv=False, autorun_train=True)
    st.switch_page(st.session_state["_pages"]["train"])
st.page_link(st.session_state["_pages"]["lesson"], label="Lesson: why GCCS looked robust under a weak attack (5 steps)",
             icon=":material/cast_for_education:")
st.page_link(st.session_state["_pages"]["draw"], label="Draw a digit and see where it lands in both latent spaces",
             icon=":material/draw:")
st.caption("Teacher mode (sidebar, or `?teacher=1` in the URL) hides the controls and enlarges the plots. The URL always "
           "holds the dataset, models, projection and attack settings: copy it to share exactly this view.")

st.subheader("The idea")
st.markdown("""
A classifier here is an encoder that maps an image *x* to a latent vector *z* in ℝᵈ, followed by a decision rule.
With **cross-entropy** the network learns a linear layer and is rewarded for making the right class's score
largest, sample by sample; nothing says how the classes should be arranged in latent space, and two classes may
end up close together: a short path for an attacker.

**GCCS** fixes the arrangement in advance. The K class means μ₁…μ_K are the vertices of a **regular simplex**
centred at the origin, so every class is equally far from every other. Each class is trained to follow the
Gaussian **N(μₖ, σ²I)**, and the decision rule is the Bayes rule for those Gaussians: the nearest vertex.
""")
st.latex(r"\|\mu_k\| = r,\qquad \langle \mu_i,\mu_j\rangle = -\frac{r^2}{K-1}\ (i\neq j),\qquad "
         r"\Delta = \|\mu_i-\mu_j\| = r\sqrt{\frac{2K}{K-1}}")
st.latex(r"s_k(z) = -\frac{\|z-\mu_k\|^2}{2\sigma^2},\qquad \hat y = \arg\max_k s_k(z)")
st.markdown("""
The loss compares the **distribution** of each class's latents in a mini-batch with its target Gaussian. With
*m_k* and *S_k* the mean and (shrunk) covariance of the *n_k* latents of class *k* in a batch of *N*:
""")
st.latex(r"\mathcal{L} = \sum_k \frac{n_k}{N}\,\mathrm{KL}\big(\mathcal{N}(m_k,S_k)\,\|\,\mathcal{N}(\mu_k,\sigma^2 I)\big)"
         r" + \lambda\,\frac{1}{N}\sum_i \frac{\|z_i-\mu_{y_i}\|^2}{2\sigma^2}")
st.latex(r"\mathrm{KL}_k = \tfrac12\Big[\tfrac{\operatorname{tr} S_k}{\sigma^2} + \tfrac{\|m_k-\mu_k\|^2}{\sigma^2} - d"
         r" + d\ln\sigma^2 - \ln\det S_k\Big]")
st.markdown("""
The mean term pulls each class onto its vertex; the trace term keeps its spread near σ; the −ln det term stops a
class from collapsing to a point (what distinguishes it from the MMC loss, which only pulls).
""")
st.warning("Honest note: only the abstracts of the GCCS papers (Ali et al., arXiv 2010.15487, ICPR 2020; EURASIP J. "
           "Inf. Security 2023) were available to this project. The loss above is **our reconstruction from the papers' "
           "stated design** (Gaussian targets on simplex vertices, distribution matching, a hyperplane decision rule), "
           "not the authors' exact equations. Robustness gains measured here are modest; trust the Compare page's "
           "worst-case numbers over any single attack.")

st.subheader("Geometry: how separable are the class Gaussians?")
st.markdown("Two neighbouring classes N(μᵢ, σ²I) and N(μⱼ, σ²I) overlap with Bayes error **Q(Δ / 2σ)**, Q the "
            "standard normal tail. Only the ratio Δ/σ matters.")
from gccs_core.simplex import edge_length, pairwise_bayes_error, separation_ratio  # noqa: E402

g1, g2, g3 = st.columns(3)
k = g1.slider("Classes K", 2, 100, 10, key="geo_k")
r = g2.slider("Vertex norm r", 0.5, 20.0, 10.0, 0.5, key="geo_r")
sigma = g3.slider("σ", 0.1, 10.0, 1.0, 0.1, key="geo_sigma")
m1, m2, m3 = st.columns(3)
m1.metric("Edge length Δ", f"{edge_length(k, r):.3f}")
m2.metric("Δ / σ", f"{separation_ratio(k, r, sigma):.2f}")
m3.metric("Pairwise Bayes error", f"{pairwise_bayes_error(k, r, sigma):.3g}")
st.caption("In the app's simplex view the K vertices are drawn on a regular K-gon: an exact orthogonal projection "
           "(θₖ = 2πk/K, axes a = Σ cos θₖ μₖ and b = Σ sin θₖ μₖ, which are orthogonal with equal norms for a regular "
           "simplex). A projected class Gaussian N(μₖ, σ²I) stays a circle of radius σ there.")
