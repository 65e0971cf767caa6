"""The protection rules in the operator's words. No framework or database code here."""
