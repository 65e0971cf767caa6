"""The catalog's rules about restore points and their copies."""
