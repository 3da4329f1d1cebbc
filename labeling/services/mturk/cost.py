"""What a batch costs: the workers' rewards plus Amazon's fee, in Decimal to the cent."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from ...models import MTurkBatch

CENT = Decimal("0.01")
FEE_RATE = Decimal("0.20")        # Amazon's commission on a reward
LARGE_HIT_FEE_RATE = Decimal("0.40")  # ... when a HIT has LARGE_HIT_ASSIGNMENTS or more assignments
LARGE_HIT_ASSIGNMENTS = 10
MIN_FEE = CENT                    # per assignment


def fee_rate(max_assignments: int) -> Decimal:
    """The share of the reward Amazon takes on a HIT with this many assignments."""
    return LARGE_HIT_FEE_RATE if max_assignments >= LARGE_HIT_ASSIGNMENTS else FEE_RATE


def fee_per_assignment(reward: Decimal, max_assignments: int) -> Decimal:
    """Amazon's commission on one assignment (:func:`fee_rate` of the reward, at least
    :data:`MIN_FEE`), rounded to the cent."""
    return max(MIN_FEE, (Decimal(reward) * fee_rate(max_assignments)).quantize(CENT, rounding=ROUND_HALF_UP))


def fee_rule() -> str:
    """The fee rule in words, for the pages (from the constants above, so it cannot drift)."""
    return (f"{FEE_RATE * 100:.0f}% of the reward, {LARGE_HIT_FEE_RATE * 100:.0f}% when a HIT has "
            f"{LARGE_HIT_ASSIGNMENTS} or more assignments, at least ${MIN_FEE} an assignment")


@dataclass
class Cost:
    hits: int
    assignments: int
    rewards: Decimal
    fees: Decimal
    fee_rate: Decimal

    @property
    def total(self) -> Decimal:
        return self.rewards + self.fees


def estimate_cost(*, hits: int, assignments_per_hit: int, reward: Decimal) -> Cost:
    reward = Decimal(reward)
    n = hits * assignments_per_hit
    return Cost(hits=hits, assignments=n, rewards=(reward * n).quantize(CENT),
                fees=(fee_per_assignment(reward, assignments_per_hit) * n).quantize(CENT),
                fee_rate=fee_rate(assignments_per_hit))


def batch_cost(batch: MTurkBatch) -> Cost:
    return estimate_cost(hits=batch.hits.count(), assignments_per_hit=batch.assignments_per_image,
                         reward=batch.reward)
