"""Performance measurement: speed, FLOPs and memory of the backbone (``backbone``), the whole restorer against
the official-style reference (``model``, ``reference``, ``report``) and a training step (``training``), all on the
helpers of ``measure``. A layer on top of the model, inference and training code; nothing imports it back."""
