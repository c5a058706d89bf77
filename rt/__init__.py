"""Pure RT domain code (structures, dose, plans, DVH). Imports no Flask, Dash, SQLAlchemy or oncopacs."""
