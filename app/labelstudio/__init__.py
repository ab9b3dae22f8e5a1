"""The Label Studio ML backend (``/labelstudio``): annotations become examples, predictions are
k-shot segmentations of them (docs/labelstudio.md)."""
