"""Deprecated alias (one release): the ART adapter now lives in ``gccs_core.attacks.art``."""

from .attacks.art import art_attack, art_classifier, art_pgd, build_art_attack  # noqa: F401
