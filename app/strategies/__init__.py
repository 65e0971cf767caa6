"""One strategy per protection method; each declares what it needs and what it yields."""

from app.strategies.declarations import DECLARATIONS

__all__ = ["DECLARATIONS"]
