"""The one error type training raises for bad input (data, labels, config, checkpoints).

Training does not depend on the runtime (design.md), so it has its own `ValueError` subclass, like
`tsf.training.weights.WeightsError`; `tsf-train` prints either as `error: <message>` and exits 2.
"""


class TrainingError(ValueError):
    """Bad training input; the message is one line naming the problem."""
