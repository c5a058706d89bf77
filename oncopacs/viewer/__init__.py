"""The image viewer's server side: scenes loaded from the archive, slices and the plan page's layers, the
slice PNG route's rendering, and the words and colours a plan is shown with (isodose levels, goals, beams)."""
