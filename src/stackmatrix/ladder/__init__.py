"""The host side of the probe ladder: orders the rungs, runs the static checks, derives verdicts."""
