"""The Dash application each dashboard page is: only the scripts the page needs.

Dash puts the scripts of every component library imported anywhere in the process into every app's page: on the
2-core reference machine the browser spends about 0.1 s evaluating AG Grid's 1.3 MB on a page that shows no grid,
before the first callback can start. A :class:`PageDash` serves Dash's own libraries, the shell's (Mantine) and the
``libraries`` it names (their lazily loaded chunks included). :func:`plotly_early` starts loading Plotly (3.5 MB,
loaded lazily by the first graph) with the page, for pages whose graphs arrive with their first callback. (Babel's
polyfill stays: Dash's core components need its regenerator runtime.) The pages' time to usable is measured by
``benchmarks/dashboards.py``.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc
from dash.resources import Scripts

#: Always served: the Dash renderer's own component libraries and the shell's (Mantine).
CORE_LIBRARIES = ("dash", "dash_mantine_components")


class _PageScripts(Scripts):
    """Dash's scripts of the named component libraries only (by namespace)."""

    def __init__(self, serve_locally: bool, eager: bool, libraries: tuple[str, ...]) -> None:
        super().__init__(serve_locally, eager)
        self._libraries = list(libraries)

    def get_all_scripts(self, dev_bundles: bool = False) -> list[Any]:
        return self.get_library_scripts(self._libraries, dev_bundles)


class PageDash(dash.Dash):
    """A ``dash.Dash`` whose page loads the core libraries and ``libraries`` (e.g. ``("dash_ag_grid",)``)."""

    def __init__(self, *args: Any, libraries: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scripts = _PageScripts(self.scripts.config.serve_locally, self.scripts.config.eager_loading,
                                    CORE_LIBRARIES + libraries)



def plotly_early() -> dcc.Graph:
    """A hidden, empty graph for a page's first layout: Dash loads Plotly when it renders the first graph, so a page
    whose graphs come with its first callback would otherwise load and compile Plotly only then (0.1-0.2 s)."""
    return dcc.Graph(id="plotly-early", figure={}, config={"staticPlot": True}, style={"display": "none"})
