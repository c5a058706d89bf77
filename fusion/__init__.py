"""Pure image-fusion code (registration, SUV, 4D CT). Imports no Flask, Dash, SQLAlchemy or oncopacs."""
