"""Great Expectations checkpoints at the three gates of the data's path: the raw batch, the marts, the
publication.
"""
