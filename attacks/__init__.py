"""attacks package of privaudit."""
