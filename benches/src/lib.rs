//! Benchmarks live in `benches/`; the memory measurement in `src/bin`.
