//! Unit tests of the manifest module (the integration tests live in tests/manifest_parse.rs).
