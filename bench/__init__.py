"""Benchmarks and load scripts; each runs on its own (`python bench/<name>.py --help`)."""
