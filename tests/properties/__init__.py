"""Hypothesis tests: a stateful model of the layer, and fuzzed inputs of every API function."""
