"""Evaluation: tasks as data (`tasks`), one grading module (`grading`), metrics (`metrics`), backends
(`backends`), the runner with its sample cache (`runner`: `EvalConfig`, `main`) and the step sweep
(`sweep`: `SweepConfig`, `main`)."""
