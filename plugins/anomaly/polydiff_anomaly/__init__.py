"""polydiff-anomaly: tabular anomaly scoring (hook implementations only; nothing heavy at import)."""
