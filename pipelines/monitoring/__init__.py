"""Watching the data and what is live: drift of the latest window against its baseline (and its
report), and the status lines.
"""
