//! Config resolution (being written).
