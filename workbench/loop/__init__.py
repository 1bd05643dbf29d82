"""The round loop: round pieces shared with Flower, the in-process runner, checkpoints."""
