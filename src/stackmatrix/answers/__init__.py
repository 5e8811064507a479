"""The questions answered on top of the pipeline: ``gate`` (does every model a policy names still serve on a
candidate stack?), ``advise`` (the smallest change that makes it serve), ``bisect`` (from which release on an axis
it does) and the gate policy they read. Each holds its own steps and composes the pipeline's."""
