"""Models OncoPACS trains and ships itself: ``body_threshold.onnx`` (see :mod:`.train_body_onnx`)."""
