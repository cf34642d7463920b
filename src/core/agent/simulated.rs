//! A simulated agent (a fake, named as such): plays an agent's part against the store without
//! Docker, for fast controller tests and scale benchmarks. Written in its own change.
