"""Trace export: a Recorder as a Chrome Trace Event JSON file that Perfetto (ui.perfetto.dev) loads.

``write_chrome_trace(recorder, path)`` is the one entry point most callers need;
``validate_chrome_trace`` checks a trace the way Perfetto's importer would, for tests.
"""
from moesim.trace.perfetto import dumps_chrome_trace, to_chrome_trace, write_chrome_trace
from moesim.trace.validate import validate_chrome_trace

__all__ = ["dumps_chrome_trace", "to_chrome_trace", "validate_chrome_trace", "write_chrome_trace"]
