"""Evaluation: an answer's text metrics (`text`: diversity, degenerate answers, coherence), the model-based metrics
(`metrics`: KL from the base model, token flips, NLL), curves and win rates (`curves`), bootstrap statistics (`stats`)
and the report writer (`report`)."""
