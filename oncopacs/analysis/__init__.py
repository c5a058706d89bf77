"""Analysis families over the archive, one shape each: ``<family>.py`` finds, loads and stores its results,
``<family>_job.py`` is its job kind and ingest rule.

- ``rt`` / ``rt_job``: DVHs, TG-263 metrics, clinical goals and plan summaries of planning sets;
- ``pet`` / ``pet_job``: SUV statistics of contoured PET series, PET time points and response;
- ``registration`` / ``registration_job``: registrations and derived objects with their QA;
- ``results``: the one input-keyed upsert and reads every family shares; ``cohort``: the tumour board's rows;
- ``models``: the result rows (``AnalysisResult``, ``MetricValue``).
"""

__all__ = ["cohort", "models", "pet", "pet_job", "registration", "registration_job", "results", "rt", "rt_job"]
