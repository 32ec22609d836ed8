"""Evaluation: held-out loss and loss by token position, their plot, and recorded forget gates.

ev = evaluate(model, batches, device=torch.device("cpu"), buckets=32)  # {"loss", "position_loss", ...}

``foxacp eval`` (report.py) adds the loss at every position of long documents (long_loss.py) and passkey
retrieval (passkey.py), with ACP and exactly.
"""

from .loss import evaluate, position_buckets, token_losses
from .plot import plot_position_loss, position_curve

__all__ = ["evaluate", "plot_position_loss", "position_buckets", "position_curve", "token_losses"]
