"""What the symbolizer says of one address: the symbolizer's own small record.

The agent maps it to the model's frame record (podflame.model.frames); this
package imports nothing of podflame's, so it stays usable and testable alone.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Symbol:
    """`name`: the function, or ``module+0xOFFSET`` / ``[unknown]`` when `resolved` is False.

    `module`: the mapped file's name (or [vdso]); `offset`: the file offset, kept
    for a frame that could not be named (for a named one, every address in the
    function is the same frame). `jit`: code in anonymous memory (a perf map's).
    """

    name: str
    module: str = ""
    offset: int | None = None
    resolved: bool = True
    jit: bool = False
