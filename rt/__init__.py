"""Pure RT domain code (structures, dose, plans, DVH). Imports no Flask, Dash, SQLAlchemy or oncopacs."""

# The modules a notebook imports (``from rt import dose, dvh``); none is imported until asked for.
__all__ = [
    "analysis",
    "autocontour",
    "compare",
    "course",
    "dose",
    "dvh",
    "errors",
    "gamma",
    "goals",
    "grid",
    "indices",
    "plan",
    "polygons",
    "roi_names",
    "rtstruct_writer",
    "seg_writer",
    "structures",
    "summation",
    "tg263",
    "tps_dvh",
]
