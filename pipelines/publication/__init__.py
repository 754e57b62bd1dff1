"""Publishing the champion: per-user lists (built by models.lists), the FAISS item index, and the
atomic switch of a version written in serving.format's layout.
"""
