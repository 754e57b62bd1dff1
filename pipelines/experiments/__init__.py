"""Online experiments: declarations (declaration.py), their start/stop state (state.py), the
slate-item input contract (contract.py), the statistics (stats.py: numpy/scipy only) and the
readout over the warehouse (readout.py) that the CLI and the daily DAG call."""
