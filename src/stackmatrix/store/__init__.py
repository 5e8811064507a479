"""Results on disk: a run's directory (runs), its journal, the row each record becomes, the SQLite index over
every run, reuse of stored records as cache hits, whether a record could be what its run wrote (provenance), and
the merge of shards."""
