"""Core: what several methods share, with no notion of a run: parameter sections, facts defined
once, data and partitions, zoo models, one training phase, pure aggregation, FLOP and byte
accounting, tidy results."""
