//! The MySQL persister. (being built)
