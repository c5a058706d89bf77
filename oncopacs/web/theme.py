"""The look every page shares: one palette, one font stack, one header.

The dashboards' Mantine theme (:mod:`dashboards.shell`) and the Flask pages' stylesheet (``static/oncopacs.css``,
through the CSS variables of :func:`css_variables`) are both built from these values, so a colour changes in one place.
"""

from __future__ import annotations

PRODUCT_NAME = "OncoPACS"
FONT_FAMILY = ("system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'Liberation Sans', 'DejaVu Sans', "
               "Arial, sans-serif")
MONOSPACE_FONT_FAMILY = "ui-monospace, 'DejaVu Sans Mono', 'Liberation Mono', Menlo, Consolas, monospace"
#: The primary colour, light to dark (Mantine's ten shades; shade 7 fills buttons and active links).
PRIMARY_SHADES = ("#eef3f9", "#dbe4f0", "#b4c7df", "#8aa8cd", "#6890be", "#5280b5", "#4677b1", "#36659b",
                  "#2d5a8b", "#1f3a5f")
PRIMARY_NAME = "oncopacs"
PRIMARY_SHADE = 7
HEADER_BACKGROUND = PRIMARY_SHADES[9]
HEADER_TEXT = "#ffffff"
PATIENT_BAR_BACKGROUND = PRIMARY_SHADES[0]
PAGE_BACKGROUND = "#f6f7f9"
TEXT_COLOUR = "#1d2329"
DIMMED_TEXT = "#5c6670"
BORDER_COLOUR = "#dee2e6"
HEADER_HEIGHT_PX = 52
NAVBAR_WIDTH_PX = 264
RADIUS = "6px"


def css_variables() -> str:
    """The palette as CSS custom properties on ``:root`` (what ``static/oncopacs.css`` reads)."""
    values = {
        "font-family": FONT_FAMILY,
        "monospace-font-family": MONOSPACE_FONT_FAMILY,
        "primary": PRIMARY_SHADES[PRIMARY_SHADE],
        "primary-light": PRIMARY_SHADES[1],
        "header-background": HEADER_BACKGROUND,
        "header-text": HEADER_TEXT,
        "patient-bar-background": PATIENT_BAR_BACKGROUND,
        "page-background": PAGE_BACKGROUND,
        "text": TEXT_COLOUR,
        "dimmed": DIMMED_TEXT,
        "border": BORDER_COLOUR,
        "header-height": f"{HEADER_HEIGHT_PX}px",
        "radius": RADIUS,
    }
    return ":root { " + " ".join(f"--op-{name}: {value};" for name, value in values.items()) + " }"


def template_context() -> dict[str, str]:
    """What every Flask template may use: the product name and the theme's CSS variables."""
    return {"product_name": PRODUCT_NAME, "theme_css": css_variables()}
