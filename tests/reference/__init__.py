"""Independent float64 re-implementations of the reference pipeline, written from
`docs/reference.md` alone (never from tsf's own code), so that tests
compare tsf against the contract rather than against itself."""
