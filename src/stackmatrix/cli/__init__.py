"""The command line: the parser made from the option records (args), the dispatch (main) and the commands,
those that probe (probe), those over stored runs (stored) and ``image facts`` (image). Nothing below imports it."""
