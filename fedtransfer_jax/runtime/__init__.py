"""Infrastructure every layer may use: checkpoints, the console, processes and host devices, atomic files,
the run log, the workdir lock, crash points for the resume tests, and the one uint8 pixel decoding (host
and device)."""
