"""Sign-in, roles, and keeping secrets secret."""
