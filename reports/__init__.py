"""reports package of privaudit."""
