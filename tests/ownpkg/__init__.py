"""A user's own package, outside fragility: small networks and a data set that profiles name by import path."""
