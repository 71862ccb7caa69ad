"""What each pipeline stage writes under its run directory, and its size on disk: shared by table.py and stage_table.py."""
import os

# Stage name (as `puzzle stage NAME` takes it) -> its outputs, relative to the run directory.
OUTPUTS = {"data": ["data"], "library": ["library"], "score": ["scores", "scores.json"], "costs": ["costs.json"],
           "search": ["solutions"], "assemble": ["child"], "distill": ["child-gkd"], "evaluate": ["eval"], "export": ["export"]}


def du(run, stage):
    """Bytes under the stage's outputs in RUN (files and folders; 0 where nothing was written)."""
    total = 0
    for p in OUTPUTS.get(stage, []):
        p = os.path.join(run, p)
        if os.path.isfile(p):
            total += os.path.getsize(p)
        for d, _, files in os.walk(p):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total
