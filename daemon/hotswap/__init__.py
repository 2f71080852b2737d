"""Plugin hot swap: trusted loading, sandbox validation, the all-or-nothing swap."""
