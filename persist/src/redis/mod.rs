//! The Redis mirror. (being built)
