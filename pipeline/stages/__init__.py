"""One thin module per stage: parse params, call pure functions, write outputs."""
