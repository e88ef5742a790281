"""Reports: probes run, verified and written to disk as pictures and JSON."""
