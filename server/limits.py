"""Bounds on what one ingest request may expand to, checked before the work is done.

Only bytes are bounded by --max-ingest-bytes, yet 128 bytes of gzip-compressed pprof
can name one location of 3,000 lines 3,000 times: 9,000,000 frames. These limits count
stacks and frames from the decoded request (a pprof's frames from its locations'
sizes, never by expanding them) and refuse a request over one with a 413 naming it.
A stack deeper than max_stack_frames is not refused but cut to its leaf end, as
Pyroscope does: deep recursion is legitimate, and its leaf frames are where the time is.
The defaults are far above what an agent or a Pyroscope SDK sends (an agent's stacks
are at most 127 user and 127 kernel frames, its batches at most 262,144 stacks).
"""

from dataclasses import dataclass, fields

from podflame.model import Batch
from podflame.model.pprof import PprofLimitExceeded, PprofLimits
from podflame.model.profile import truncate_wire_stack

DEFAULT_MAX_STACK_FRAMES = 1024
DEFAULT_MAX_STACKS_PER_PUSH = 1_000_000
DEFAULT_MAX_FRAMES_PER_PUSH = 5_000_000
DEFAULT_MAX_PPROF_LOCATIONS = 1_000_000
DEFAULT_MAX_PPROF_LINES = 2_000_000
DEFAULT_MAX_PPROF_FUNCTIONS = 1_000_000
DEFAULT_MAX_PPROF_STRINGS = 2_000_000
DEFAULT_MAX_PPROF_SAMPLE_ENTRIES = 4_000_000
DEFAULT_MAX_PROFILE_TYPES = 1000


@dataclass(frozen=True)
class IngestLimits:
    """The server settings of the same names (flags --max-stack-frames, ...)."""

    max_stack_frames: int = DEFAULT_MAX_STACK_FRAMES
    max_stacks_per_push: int = DEFAULT_MAX_STACKS_PER_PUSH
    max_frames_per_push: int = DEFAULT_MAX_FRAMES_PER_PUSH
    max_pprof_locations: int = DEFAULT_MAX_PPROF_LOCATIONS
    max_pprof_lines: int = DEFAULT_MAX_PPROF_LINES
    max_pprof_functions: int = DEFAULT_MAX_PPROF_FUNCTIONS
    max_pprof_strings: int = DEFAULT_MAX_PPROF_STRINGS
    max_pprof_sample_entries: int = DEFAULT_MAX_PPROF_SAMPLE_ENTRIES
    max_profile_types: int = DEFAULT_MAX_PROFILE_TYPES

    @classmethod
    def from_settings(cls, settings: object) -> "IngestLimits":
        """The fields of the same names of ServerSettings."""
        return cls(**{item.name: getattr(settings, item.name) for item in fields(cls)})

    def pprof(self) -> PprofLimits:
        """Per decoded profile; its samples are bounded by the whole push's allowance."""
        return PprofLimits(
            max_samples=self.max_stacks_per_push,
            max_sample_entries=self.max_pprof_sample_entries,
            max_locations=self.max_pprof_locations,
            max_lines=self.max_pprof_lines,
            max_functions=self.max_pprof_functions,
            max_strings=self.max_pprof_strings,
        )


class IngestLimitExceeded(ValueError):
    """A request over one of the IngestLimits (`setting` names it): a 413."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{message} ({setting_names(setting)})")
        self.setting = setting


# PprofLimits' fields, by the settings that give them.
_PPROF_SETTINGS = {
    "max_samples": "max_stacks_per_push",
    "max_locations": "max_pprof_locations",
    "max_lines": "max_pprof_lines",
    "max_functions": "max_pprof_functions",
    "max_strings": "max_pprof_strings",
    "max_sample_entries": "max_pprof_sample_entries",
}


def pprof_limit_exceeded(error: PprofLimitExceeded) -> IngestLimitExceeded:
    """The decoder's error, naming the server setting behind its limit."""
    return IngestLimitExceeded(_PPROF_SETTINGS.get(error.limit, error.limit), str(error))


def setting_names(setting: str) -> str:
    """`max_stack_frames` -> `--max-stack-frames, PODFLAME_MAX_STACK_FRAMES`."""
    return f"--{setting.replace('_', '-')}, PODFLAME_{setting.upper()}"


def check_expansion(limits: IngestLimits, stacks: int, frames: int) -> None:
    """IngestLimitExceeded unless `stacks` and `frames` (after truncation) are within bounds."""
    if stacks > limits.max_stacks_per_push:
        raise IngestLimitExceeded(
            "max_stacks_per_push",
            f"the request holds {stacks} stacks, more than the {limits.max_stacks_per_push}"
            " allowed",
        )
    if frames > limits.max_frames_per_push:
        raise IngestLimitExceeded(
            "max_frames_per_push",
            f"the request expands to {frames} frames, more than the"
            f" {limits.max_frames_per_push} allowed",
        )


def bound_batch(batch: Batch, limits: IngestLimits) -> Batch:
    """`batch` with its stacks deeper than max_stack_frames cut; IngestLimitExceeded when it
    holds too many stacks or frames."""
    depth = limits.max_stack_frames
    frames = sum(min(len(stack), depth) for stack in batch.stacks)
    # A typed batch's frame table holds at most as many frames as its stacks name.
    check_expansion(limits, len(batch.stacks), max(frames, len(batch.frames)))
    if all(len(stack) <= depth for stack in batch.stacks):
        return batch
    stacks = [truncate_wire_stack(stack, depth) for stack in batch.stacks]
    return batch.model_copy(update={"stacks": stacks})
