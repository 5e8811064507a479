"""The pipeline: one ordered table of steps per command (steps: load -> expand -> select -> plan -> execute ->
store -> render), the probing session, the plan, the contexts the ladder is given, the expansion through the kinds,
stacks named on the command line, what a Triton release ships, and ``run --resume``."""
