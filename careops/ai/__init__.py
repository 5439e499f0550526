"""Bounded AI: models that recommend, with a calibrated confidence, a model card and a gate that
sends the uncertain to a person. Offline by default (scikit-learn on the CPU). See docs/ai.md."""
