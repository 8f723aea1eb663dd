"""Control: the exposure controller that steers injected noise to a target P-NE* path.

``ExposureController`` chooses the scale of injected noise each step so the
run's integrated P-NE* follows a ``ReferenceTrajectory`` (another run's, along
optimizer steps or validation loss) or spends a ``BudgetWindow``.
"""

from gradnoise.control.controller import (
    AXES,
    BudgetWindow,
    ExposureController,
    ReferenceTrajectory,
    tracking_error,
)

__all__ = ["AXES", "BudgetWindow", "ExposureController", "ReferenceTrajectory", "tracking_error"]
