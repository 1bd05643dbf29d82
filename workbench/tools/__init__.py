"""Tools: the cost table and the benchmark harness."""
