"""Settings modules: ``base`` holds everything; ``dev``, ``test`` and ``prod`` adjust it."""
