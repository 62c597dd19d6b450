"""What a regressor learns its target as: standardised, for a network whose output starts near zero."""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, RegressorMixin


class ScaledTarget(RegressorMixin, BaseEstimator):
    """A regressor that learns a standardised target and answers in the target's own unit.

    A network's output starts near 0 and moves by its learning rate: a target of
    hundreds would take it thousands of epochs to reach. Learning (y - mean) / std
    instead, as scikit-learn's TransformedTargetRegressor does, but also in epochs
    (`partial_fit`, whose first call sets the mean and the standard deviation).

    Args:
        regressor: The regressor to train on the standardised target.
    """

    def __init__(self, regressor: Any) -> None:
        self.regressor = regressor

    def fit(self, features: Any, target: Any) -> ScaledTarget:
        """Learn the target's mean and standard deviation, then fit the regressor on the standardised target."""
        from sklearn.base import clone

        self._learn_scale(target)
        self.regressor_ = clone(self.regressor).fit(features, self._scaled(target))
        return self

    def partial_fit(self, features: Any, target: Any) -> ScaledTarget:
        """One more pass of the regressor on the standardised target (the first call learns the scale)."""
        from sklearn.base import clone

        if not hasattr(self, "regressor_"):
            self._learn_scale(target)
            self.regressor_ = clone(self.regressor)
        self.regressor_.partial_fit(features, self._scaled(target))
        return self

    def predict(self, features: Any) -> Any:
        """Predictions in the target's unit."""
        return self.regressor_.predict(features) * self.scale_ + self.mean_

    @property
    def loss_(self) -> float:
        """The regressor's training loss (on the standardised target)."""
        return self.regressor_.loss_

    def _learn_scale(self, target: Any) -> None:
        import numpy as np

        values = np.asarray(target, dtype="float64")
        self.mean_, self.scale_ = float(values.mean()), float(values.std()) or 1.0

    def _scaled(self, target: Any) -> Any:
        import numpy as np

        return (np.asarray(target, dtype="float64") - self.mean_) / self.scale_
