"""Tests of training on several processes (gloo on the CPU)."""
