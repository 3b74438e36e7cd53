"""Benchmarks: black box over WebRTC (see docs/benchmarks.md)."""
