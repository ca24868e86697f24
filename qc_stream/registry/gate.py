"""The promotion gate (pure): a retrained candidate replaces the active version only when no gated
holdout metric drops by more than ``tolerance`` (absolute) against the active version measured on
the same holdout in the same run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# The quality figures of the eval contract, all fractions in 0..1 where higher is better.
GATED_METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro", "type_f1")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)  # why not (or notes when promoted)

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "no metric regressed"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def decide(
    candidate: dict,
    active: dict | None,
    tolerance: float,
    metrics: tuple[str, ...] = GATED_METRICS,
    *,
    diverged: str | None = None,
) -> GateDecision:
    """``active=None``: nothing to compare with (first version): promote when the candidate is sane."""
    if diverged:
        return GateDecision(False, [f"training diverged: {diverged}"])
    # Checked with or without an active version: when the active version is undefined on every
    # metric too, the loop below would compare nothing and promote a candidate nobody measured.
    if not any(_finite(candidate.get(m)) for m in metrics):
        return GateDecision(False, ["the candidate produced no finite holdout metric"])
    if active is None:
        return GateDecision(True, ["no active version to compare with"])
    reasons = []
    for m in metrics:
        old, new = active.get(m), candidate.get(m)
        if not _finite(old):
            continue  # undefined on this holdout for the active version: nothing to defend
        if not _finite(new):
            reasons.append(f"{m} is undefined for the candidate (active {old:.3f})")
        elif new < old - tolerance:
            reasons.append(f"{m} {new:.3f} < active {old:.3f} - tolerance {tolerance:.3f}")
    return GateDecision(not reasons, reasons)
