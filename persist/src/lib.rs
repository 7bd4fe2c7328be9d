//! WAL → MySQL persister and Redis mirror. Not built yet: see the
//! "Persister" and "Redis mirror" issues. Nothing here pretends to work.
