"""Evaluation: the paper's metrics (`metrics`), bootstrap statistics (`stats`) and the report writer (`report`)."""
