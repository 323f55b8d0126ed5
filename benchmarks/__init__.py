"""Speed and memory benchmarks that print what they measure (never timed tests); run from the repo root as
`python -m benchmarks.<name>` (see docs/PERFORMANCE.md)."""
