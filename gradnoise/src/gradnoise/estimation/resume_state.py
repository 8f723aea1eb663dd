"""What a resumed ``NoiseLogger`` needs to integrate as an unbroken run: its sums, held
diagonals and the clip-rate and B_simple windows.
"""

from __future__ import annotations


class ResumeState:
    """``state_dict`` / ``load_state_dict``: a part of ``NoiseLogger``, reading its attributes."""

    def state_dict(self) -> dict:
        """Integrated sums, held diagonals, the clip-rate and B_simple windows, for a checkpoint."""
        return {
            "integral": self.integral.state_dict(),
            "b_window": list(self.b_window),
            "window_steps": self.window_steps,
            "window_clipped": self.window_clipped,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned, so a resumed run integrates as an unbroken one."""
        missing = {"integral", "b_window", "window_steps", "window_clipped"} - set(state)
        if missing:
            raise KeyError(f"NoiseLogger state lacks {sorted(missing)}")
        self.integral.load_state_dict(state["integral"], self.params[0].device)
        self.b_window.clear()
        self.b_window.extend((float(c), float(g)) for c, g in state["b_window"])
        self.window_steps = int(state["window_steps"])
        self.window_clipped = int(state["window_clipped"])
