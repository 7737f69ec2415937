"""A trace's anatomy: answers (extract, verify), quality flags and selection, the arithmetic claims,
steps and roles, and the supervision variants built from them. Pure Python, no torch or Ray."""
