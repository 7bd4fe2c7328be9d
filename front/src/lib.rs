//! The HTTP front. Not built yet: see the "HTTP front" issue.
