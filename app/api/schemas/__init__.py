"""Request and response bodies. Inputs forbid unknown fields; secrets are write-only."""
