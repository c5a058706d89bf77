"""Decoding DICOM without patient data reaching the logs.

pydicom reports a doubtful value twice, as a ``pydicom`` log record and as a ``UserWarning``, and
both quote it (``Invalid value for VR UI: '…'``): on a damaged file the quoted bytes run past the
element into names and IDs. While :func:`decoding` is active in a thread, both are caught and
counted per element instead; :class:`ValueWarnings` is the one summary that is logged, with
element keywords and tags and never values.

Outside it (a stored file read for an analysis or a WADO-RS answer), the filter that
:func:`guard_pydicom_logs` puts on pydicom's loggers (the composition root calls it; the first
:func:`decoding` block installs it if nobody did) keeps pydicom's records value-free: each is cut
before the first quote, colon or bracket, where pydicom puts values and raw bytes, and an attached
exception keeps its frames but not its message. ``log_phi`` (``ONCOPACS_LOG_PHI``, for debugging
only) lets the full messages through and keeps them in the summary.
"""

from __future__ import annotations

import logging
import re
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydicom.datadict import keyword_for_tag
from pydicom.tag import BaseTag, Tag

#: The loggers pydicom writes to ("pydicom" and its children, e.g. pixel decoders).
PYDICOM_LOGGER = "pydicom"
WITHHELD = "[rest withheld: it may quote patient data; ONCOPACS_LOG_PHI=true shows it]"
_VALUE_START = re.compile(r"['\"(:\[<{=]")  # where pydicom's messages start quoting values or bytes
_PREFIX_LIMIT = 120
KEPT_MESSAGE_CHARS = 1000  # of each message kept with log_phi (a damaged value may run for kilobytes)
PARSING = "parsing"  # what a report is attributed to before any element is being decoded

_collector: ContextVar[ValueWarnings | None] = ContextVar("oncopacs_value_warnings", default=None)


def describe_tag(tag: int | BaseTag) -> str:
    """``"PatientName (0010,0010)"``, or the bare tag for one the dictionary does not know."""
    tag = Tag(tag)
    keyword = keyword_for_tag(tag)
    return f"{keyword} {tag}" if keyword else str(tag)


def value_free(message: str) -> str:
    """A pydicom message cut before the first place it may quote a value or raw bytes."""
    match = _VALUE_START.search(message)
    if match is None and len(message) <= _PREFIX_LIMIT:
        return message
    prefix = message[: match.start() if match else _PREFIX_LIMIT].rstrip(" ,-")
    return f"{prefix[:_PREFIX_LIMIT]} {WITHHELD}"


class ValueWarnings:
    """What pydicom reported while one object was decoded: a count per element, and the messages
    themselves only when asked to keep them (they quote values)."""

    def __init__(self, *, keep_messages: bool = False) -> None:
        self.counts: Counter[str] = Counter()
        self.messages: list[str] = []
        self._keep = keep_messages
        self._element = PARSING  # until an element is being decoded
        self._logged: set[str] = set()

    @contextmanager
    def element(self, label: str) -> Iterator[None]:
        """Attribute what is reported inside the block to the element ``label`` (e.g. "PatientName (0010,0010)")."""
        previous, self._element = self._element, label
        try:
            yield
        finally:
            self._element = previous

    def add(self, message: str, *, from_log: bool = True) -> None:
        """Count one report; a warning that repeats a log record just seen (pydicom sends both) is not counted again."""
        if from_log:
            self._logged.add(message)
        elif message in self._logged:
            return
        self.counts[self._element] += 1
        if self._keep:
            self.messages.append(f"{self._element}: {message[:KEPT_MESSAGE_CHARS]}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``"3 value warnings: 2 in PatientName (0010,0010), 1 while parsing"``; empty when there were none."""
        if not self.counts:
            return ""
        noun = "warning" if self.total == 1 else "warnings"
        places = [(count, "while parsing" if label == PARSING else f"in {label}")
                  for label, count in self.counts.most_common()]
        if len(places) == 1:
            text = f"{self.total} value {noun} {places[0][1]}"
        else:
            text = f"{self.total} value {noun}: " + ", ".join(f"{count} {place}" for count, place in places)
        if self._keep and self.messages:
            text += " [log_phi] " + " | ".join(self.messages)
        return text


@contextmanager
def decoding(collector: ValueWarnings | None = None) -> Iterator[ValueWarnings]:
    """Decode received bytes inside this block: pydicom's log records and warnings are counted in the
    collector (a new one unless given) and not emitted.

    The warnings part uses :func:`warnings.catch_warnings`, which is process-wide: a warning another
    thread raises meanwhile is counted here too instead of being shown (it never carries our values out).
    """
    collector = collector if collector is not None else ValueWarnings()
    _install_record_filter(log_phi=None)  # the records are caught by it: make sure it is there
    token = _collector.set(collector)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield collector
    finally:
        _collector.reset(token)
    for warning in caught:
        collector.add(str(warning.message), from_log=False)


def current_collector() -> ValueWarnings | None:
    """The collector of the :func:`decoding` block this thread is in, if any."""
    return _collector.get()


class _PydicomRecordFilter(logging.Filter):
    """Counts pydicom's warnings and errors into the active collector (dropping them), and cuts the values out of
    every other record (its debugging output included)."""

    def __init__(self, *, log_phi: bool) -> None:
        super().__init__()
        self.log_phi = log_phi

    def filter(self, record: logging.LogRecord) -> bool:
        collector = _collector.get()
        if collector is not None and record.levelno >= logging.WARNING:
            collector.add(record.getMessage())
            return False
        if not self.log_phi:
            record.msg, record.args = value_free(record.getMessage()), None
            if record.exc_info and record.exc_info[1] is not None:  # the exception's text may quote values too
                record.msg += "\n" + value_free_traceback(record.exc_info[1])
            record.exc_info, record.exc_text = None, None
        return True


def value_free_traceback(exc: BaseException, *, limit: int = 12) -> str:
    """Where ``exc`` was raised (its last frames: file, line, function, source) and its class, without its
    message, which pydicom and SQLAlchemy fill with values (``Invalid value for VR UI: '…'``, SQL parameters)."""
    frames = traceback.format_list(traceback.extract_tb(exc.__traceback__)[-limit:])
    return "Traceback (most recent call last):\n" + "".join(frames) + f"{type(exc).__name__} [message withheld]"


def guard_pydicom_logs(*, log_phi: bool = False) -> None:
    """Install (once per process; later calls update ``log_phi``) the filter on pydicom's loggers, and
    silence pydicom's ``UserWarning`` copies of its log records (shown on standard error, they would
    put the values back into the server log).

    Called by the composition root when the archive opens, so it holds wherever pydicom decodes
    patient data, whatever configured the log handlers.
    """
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    _install_record_filter(log_phi=log_phi)


def _install_record_filter(*, log_phi: bool | None) -> None:
    """Put the filter on pydicom's loggers that lack it; ``log_phi`` None keeps the setting of those that have it."""
    names = [PYDICOM_LOGGER, *(name for name in logging.Logger.manager.loggerDict if name.startswith("pydicom."))]
    for name in names:
        logger = logging.getLogger(name)
        installed = [f for f in logger.filters if isinstance(f, _PydicomRecordFilter)]
        for existing in installed:
            if log_phi is not None:
                existing.log_phi = log_phi
        if not installed:
            logger.addFilter(_PydicomRecordFilter(log_phi=bool(log_phi)))
