//! Tests of the routing choice.
