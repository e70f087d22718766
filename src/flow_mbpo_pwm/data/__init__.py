"""Training data: the on-device replay buffer (`replay.py`) and HDF5 datasets (`datasets.py`)."""
