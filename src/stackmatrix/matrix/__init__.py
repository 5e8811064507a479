"""The matrix as input: the catalogs, the matrix file, the two as a run loads them, the version rules that pick
a stack's pins from the index, and cell selection. It never imports the pipeline that expands it."""
