"""What a run's records become: the readiness table in eight formats (render, with table, text, machine, html,
latex, junit, heatmap), history, diffs with upstream's news, and the verdicts' legend. Reports read stored runs;
they never import a runner or a probe."""
