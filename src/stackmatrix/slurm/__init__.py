"""Slurm, driven through its own commands (``sbatch``, ``squeue``, ``scontrol``, ``scancel``, ``sinfo``): the
parts the ``slurm`` executor is built from. We write no scheduler: Slurm schedules; we submit, watch and read."""
