"""The paper's diagnostic studies: registry (:mod:`.registry`), scales (:mod:`.scales`),
planning (:mod:`.plan`), one cell's run (:mod:`.runner`), MLflow tracking
(:mod:`.tracking`) and the driver with its executors (:mod:`.driver`)."""
