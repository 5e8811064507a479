"""Files, read and written safely: atomic writes (a reader never sees half a file), reads of what came from
outside that never hang (a FIFO, a directory, a huge file), TOML into pydantic models, and the folders the
package ships (matrix/, probes/, images/)."""
