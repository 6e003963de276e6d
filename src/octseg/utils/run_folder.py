"""One run, one folder: a run claims its output folder before writing anything into it."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

__all__ = ["RUN_MARKER", "RunFolderInUseError", "claim_run_folder"]

#: Created atomically (``O_EXCL``) by the run that owns the folder.
RUN_MARKER = ".octseg-run"


class RunFolderInUseError(RuntimeError):
    """Another run already owns the output folder."""


def claim_run_folder(output_dir: str | Path, resuming: bool = False) -> Path:
    """Claims ``output_dir`` for this run, or refuses if another run already wrote there.

    A new run creates the marker file with ``O_EXCL``, so of two runs started at the same time
    with the same folder exactly one succeeds; a folder holding a previous run's checkpoints or
    report is refused too. A resumed run takes the folder over.

    Returns:
        The marker's path.

    Raises:
        RunFolderInUseError: naming the folder and what to do.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / RUN_MARKER
    owner = f"pid={os.getpid()} host={socket.gethostname()} started={time.strftime('%FT%T')}\n"
    if resuming:
        marker.write_text(owner)
        return marker
    leftovers = [
        n for n in ("checkpoints", "metrics.json", "config.yaml") if (folder / n).exists()
    ]
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        leftovers.insert(0, f"{RUN_MARKER} ({marker.read_text().strip()})")
    else:
        if not leftovers:
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            return marker
        os.close(fd)
        marker.unlink()
    raise RunFolderInUseError(
        f"Run folder {folder} already belongs to another run (it holds {', '.join(leftovers)}). "
        "Each run needs its own folder: leave hydra.run.dir at its default (unique per process), "
        f"or resume that run with ckpt_path={folder}/checkpoints/last.ckpt."
    )
