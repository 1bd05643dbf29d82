"""Core: configuration, data, models, adapters, training, aggregation, accounting, results."""
