"""The training curve of a run: ``curve.png`` from its history (training and validation loss per epoch)."""

from __future__ import annotations

import math
from pathlib import Path


def plot(history: list[dict], path, best_epoch: int | None = None, title: str = "") -> Path:
    """Write the per-epoch training and validation loss (nats per token) of ``history`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    ax.plot(epochs, [h["train_loss"] for h in history], label="training (dropout on, mean over the epoch)")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    if best_epoch:
        best = next((h["val_loss"] for h in history if h["epoch"] == best_epoch), None)
        if best is not None and math.isfinite(best):
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"best {best:.4f}", (best_epoch, best), textcoords="offset points", xytext=(-70, 8))
    losses = [h[k] for h in history for k in ("train_loss", "val_loss") if math.isfinite(h[k])]
    if losses:  # the first epochs' losses would flatten the rest of the curve
        low = min(losses)
        ax.set_ylim(low - 0.02 * abs(low), min(max(losses), low * 1.6 + 0.1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
