"""d2p_helpers."""
