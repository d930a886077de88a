"""checkpoint.pt: what `train --resume` needs to continue an interrupted run exactly where it stopped.

It holds the job (data, options) and, per phase of training (`engine.Phase`: the frozen head, fine-tuning, a
budget's candidates), the state `engine.fit` hands over after each epoch: weights, optimiser, random-number states,
history and the best epoch so far. Checkpoints of the format before (2, which said "stage" for a phase) are read
too. Only tensors, numbers, strings and lists, so
it loads with `weights_only=True` (no pickled code). Written atomically after every epoch; removed when the run
is complete.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from vistrain.core.files import write_atomic
from vistrain.model.run_dir import CHECKPOINT, RunError

FORMAT = 3  # bump when the layout changes; an older checkpoint is read (`_upgraded`) or refused with a message


class Checkpoint:
    """The state of an unfinished run, saved to RUN/checkpoint.pt by the process that writes the run."""

    def __init__(self, run: Path, job: dict, writes: bool = True, state: dict | None = None):
        self.path = run / CHECKPOINT
        self.writes = writes
        self.state = state or {"format": FORMAT, "job": job, "phases": {}}

    def phase(self, name: str) -> dict | None:
        """The saved state of phase `name`, or None when it has not started."""
        return self.state["phases"].get(name)

    def save_phase(self, name: str, state: dict) -> None:
        self.state["phases"][name] = state
        self.save()

    def save(self) -> None:
        if self.writes:
            buffer = io.BytesIO()
            torch.save(self.state, buffer)
            write_atomic(self.path, buffer.getvalue())

    def remove(self) -> None:
        if self.writes:
            self.path.unlink(missing_ok=True)


def load_checkpoint(run: Path) -> Checkpoint:
    """The checkpoint of an interrupted run; a clear RunError when it is missing, damaged or of another version."""
    path = run / CHECKPOINT
    if not path.is_file():
        raise RunError(f"{run} has no {CHECKPOINT}: it is not an interrupted vistrain run")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many kinds for a damaged file
        raise RunError(f"{path} is damaged and cannot be resumed ({type(error).__name__}); "
                       "train again instead of resuming") from None
    state = _upgraded(state)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "job" not in state:
        raise RunError(f"{path} was written by another version of vistrain and cannot be resumed; train again")
    return Checkpoint(run, state["job"], state=state)


def _upgraded(state: object) -> object:
    """A format-2 checkpoint in format 3's words: its "stages" are the phases, and each one's best epoch names its
    "phase"; anything else as it is (refused, if it is not of this format)."""
    if not (isinstance(state, dict) and state.get("format") == 2 and isinstance(state.get("stages"), dict)):
        return state
    phases = {}
    for name, phase in state["stages"].items():
        best = phase.get("best") if isinstance(phase, dict) else None
        if isinstance(best, dict) and "stage" in best:
            phase = {**phase, "best": {**best, "phase": best["stage"]}}
        phases[name] = phase
    return {**{key: value for key, value in state.items() if key != "stages"}, "format": FORMAT, "phases": phases}
